package auth

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// newKey returns a fresh key pair, failing the test on error.
func newKey(t *testing.T) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func mint(t *testing.T, priv ed25519.PrivateKey, opts ...Option) string {
	t.Helper()
	i, err := NewIssuer(priv, time.Hour, opts...)
	if err != nil {
		t.Fatal(err)
	}
	token, _, err := i.Issue("u1", []string{RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// TestKeyIDIsTheJWKThumbprint checks KeyID against RFC 7638 computed the long way, through
// encoding/json, and against the RFC 8037 appendix A.3 example.
func TestKeyIDIsTheJWKThumbprint(t *testing.T) {
	t.Parallel()
	rfcKey, _ := base64.RawURLEncoding.DecodeString("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
	pub, _ := newKey(t)
	tests := []struct {
		name string
		key  ed25519.PublicKey
		want string
	}{
		{"RFC 8037 A.3", rfcKey, "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"},
		{"fresh key", pub, func() string {
			// encoding/json sorts map keys, which is RFC 7638's lexicographic order.
			b, _ := json.Marshal(map[string]string{"kty": "OKP", "crv": "Ed25519", "x": base64.RawURLEncoding.EncodeToString(pub)})
			sum := sha256.Sum256(b)
			return base64.RawURLEncoding.EncodeToString(sum[:])
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := KeyID(tt.key); got != tt.want {
				t.Errorf("KeyID = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTokenCarriesKidAndIss checks the header and claims an Issuer writes.
func TestTokenCarriesKidAndIss(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	tests := []struct {
		name    string
		opts    []Option
		wantIss string
	}{
		{"default issuer", nil, DefaultIssuer},
		{"named issuer", []Option{WithIssuer("elsewhere")}, "elsewhere"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token := mint(t, priv, tt.opts...)
			var c claims
			parsed, _, err := jwt.NewParser().ParseUnverified(token, &c)
			if err != nil {
				t.Fatal(err)
			}
			if kid := parsed.Header["kid"]; kid != KeyID(pub) {
				t.Errorf("kid = %v, want %q", kid, KeyID(pub))
			}
			if c.Issuer != tt.wantIss {
				t.Errorf("iss = %q, want %q", c.Issuer, tt.wantIss)
			}
		})
	}
}

// TestVerifierChecksKidAndIss covers what the key set and the issuer add to verification.
func TestVerifierChecksKidAndIss(t *testing.T) {
	t.Parallel()
	pub, priv := newKey(t)
	_, unknown := newKey(t)
	noKid := func() string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims{RegisteredClaims: jwt.RegisteredClaims{
			Issuer: DefaultIssuer, Subject: "u1", Audience: jwt.ClaimStrings{DefaultAudience},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
		}})
		s, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	otherKid := func() string {
		// Signed by a known key but naming another: the kid picks the key, so it fails.
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims{RegisteredClaims: jwt.RegisteredClaims{
			Issuer: DefaultIssuer, Subject: "u1", Audience: jwt.ClaimStrings{DefaultAudience},
			ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour)),
		}})
		tok.Header["kid"] = KeyID(unknown.Public().(ed25519.PublicKey))
		s, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	tests := []struct {
		name        string
		token       string
		wantErr     string // "" means valid
		wantRefresh bool
	}{
		{"valid", mint(t, priv), "", false},
		{"wrong issuer", mint(t, priv, WithIssuer("someone-else")), "iss", false},
		{"blank issuer", mint(t, priv, WithIssuer(" ")), "iss", false},
		{"unknown kid", mint(t, unknown), "unknown key id", true},
		{"kid of a key that did not sign", otherKid, "unknown key id", true},
		{"no kid", noKid, "no key id", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := NewVerifier([]ed25519.PublicKey{pub})
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(tt.token)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Verify: %v", err)
			case tt.wantErr != "" && (!errors.Is(err, ErrInvalidToken) || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Verify = %v, want ErrInvalidToken mentioning %q", err, tt.wantErr)
			}
			select {
			case <-v.RefreshRequests():
				if !tt.wantRefresh {
					t.Error("Verify asked for a refresh")
				}
			default:
				if tt.wantRefresh {
					t.Error("Verify did not ask for a refresh")
				}
			}
		})
	}
}

// TestVerifierSetKeys replaces the key set of a verifier that already remembers tokens.
func TestVerifierSetKeys(t *testing.T) {
	t.Parallel()
	pubA, privA := newKey(t)
	pubB, privB := newKey(t)
	tests := []struct {
		name          string
		before, after []ed25519.PublicKey
		wantA, wantB  bool // whether tokens of A and B verify after SetKeys
	}{
		{"key added", []ed25519.PublicKey{pubA}, []ed25519.PublicKey{pubA, pubB}, true, true},
		{"key removed", []ed25519.PublicKey{pubA, pubB}, []ed25519.PublicKey{pubB}, false, true},
		{"key replaced", []ed25519.PublicKey{pubA}, []ed25519.PublicKey{pubB}, false, true},
		{"every key removed", []ed25519.PublicKey{pubA, pubB}, nil, false, false},
		{"unchanged", []ed25519.PublicKey{pubA}, []ed25519.PublicKey{pubA}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v, err := NewVerifier(tt.before)
			if err != nil {
				t.Fatal(err)
			}
			tokenA, tokenB := mint(t, privA), mint(t, privB)
			// Verify both first, so that whatever verified is remembered.
			_, _ = v.Verify(tokenA)
			_, _ = v.Verify(tokenB)
			if err := v.SetKeys(tt.after); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name  string
				token string
				want  bool
			}{{"A", tokenA, tt.wantA}, {"B", tokenB, tt.wantB}} {
				_, err := v.Verify(c.token)
				if c.want && err != nil {
					t.Errorf("token of %s: %v, want it verified", c.name, err)
				}
				if !c.want && !errors.Is(err, ErrInvalidToken) {
					t.Errorf("token of %s: %v, want ErrInvalidToken", c.name, err)
				}
			}
		})
	}
}

// TestVerifierRemembersPerKey checks that a key's removal forgets what it verified, even in
// the cache, and that a removal purges the cache while an addition keeps it.
func TestVerifierRemembersPerKey(t *testing.T) {
	t.Parallel()
	pubA, privA := newKey(t)
	pubB, _ := newKey(t)
	v, err := NewVerifier([]ed25519.PublicKey{pubA})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(mint(t, privA)); err != nil {
		t.Fatal(err)
	}
	if err := v.SetKeys([]ed25519.PublicKey{pubA, pubB}); err != nil {
		t.Fatal(err)
	}
	if v.verified.Len() != 1 {
		t.Errorf("adding a key forgot the verified tokens")
	}
	if err := v.SetKeys([]ed25519.PublicKey{pubB}); err != nil {
		t.Fatal(err)
	}
	if v.verified.Len() != 0 {
		t.Errorf("removing a key kept %d verified tokens", v.verified.Len())
	}
	if got, want := v.KeyIDs(), []string{KeyID(pubB)}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("KeyIDs = %v, want %v", got, want)
	}
}

// TestVerifierRefreshRequests checks the rate limit on refresh requests and the empty verifier.
func TestVerifierRefreshRequests(t *testing.T) {
	t.Parallel()
	_, priv := newKey(t)
	v, err := NewVerifier(nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v.now = func() time.Time { return now }
	token := mint(t, priv)
	if _, err := v.Verify(token); !errors.Is(err, ErrNoKeys) {
		t.Fatalf("Verify with no keys = %v, want ErrNoKeys", err)
	}
	<-v.RefreshRequests() // the first unknown kid asks at once
	tests := []struct {
		name  string
		after time.Duration
		want  bool
	}{
		{"right after", time.Second, false},
		{"within the gap", RefreshGap - time.Millisecond, false},
		{"after the gap", RefreshGap, true},
	}
	for _, tt := range tests { // in order: each row moves the clock on from the first request
		v.now = func() time.Time { return now.Add(tt.after) }
		_, _ = v.Verify(token)
		select {
		case <-v.RefreshRequests():
			if !tt.want {
				t.Errorf("%s: asked for a refresh", tt.name)
			}
		default:
			if tt.want {
				t.Errorf("%s: did not ask for a refresh", tt.name)
			}
		}
	}
}
