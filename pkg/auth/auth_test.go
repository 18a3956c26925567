package auth

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestIssueVerify(t *testing.T) {
	t.Parallel()
	privPEM, pubPEM, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	priv, err := ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParsePublicKey(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, _ := ed25519.GenerateKey(nil)

	type clocked struct {
		*Issuer
		now time.Time
	}
	issuer := func(key ed25519.PrivateKey, aud string, ttl time.Duration, now time.Time) clocked {
		i, err := NewIssuer(key, ttl, WithAudience(aud))
		if err != nil {
			t.Fatal(err)
		}
		return clocked{i, now}
	}
	verifier, err := NewVerifier([]ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		issuer  clocked
		mangle  func(string) string
		wantErr bool
	}{
		{"valid", issuer(priv, "", time.Hour, time.Now()), nil, false},
		{"expired", issuer(priv, "", time.Minute, time.Now().Add(-time.Hour)), nil, true},
		{"other audience", issuer(priv, "elsewhere", time.Hour, time.Now()), nil, true},
		{"other key", issuer(otherPriv, "", time.Hour, time.Now()), nil, true},
		{"tampered", issuer(priv, "", time.Hour, time.Now()), func(s string) string {
			parts := strings.Split(s, ".")
			parts[1] = parts[1][:len(parts[1])-2] + "AA"
			return strings.Join(parts, ".")
		}, true},
		{"garbage", issuer(priv, "", time.Hour, time.Now()), func(string) string { return "not.a.token" }, true},
		{"alg none", issuer(priv, "", time.Hour, time.Now()), func(s string) string {
			// {"alg":"none","typ":"JWT"}
			return "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + strings.Split(s, ".")[1] + "."
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			token, exp, err := tt.issuer.IssueAt(tt.issuer.now, "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90", []string{RoleUser, RoleAdmin})
			if err != nil {
				t.Fatal(err)
			}
			if tt.mangle != nil {
				token = tt.mangle(token)
			}
			id, err := verifier.Verify(token)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidToken) {
					t.Fatalf("Verify = %v, want ErrInvalidToken", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if id.Subject != "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90" || !id.IsAdmin() || !id.Expiry.Equal(exp.Truncate(time.Second)) {
				t.Errorf("identity = %+v", id)
			}
			if !id.CanActFor("someone-else") {
				t.Errorf("an admin may act for anyone")
			}
		})
	}
}

// TestAccountStatus: a token issued with a status states it, one issued without states none, and
// the verified identity says which.
func TestAccountStatus(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := NewIssuer(priv, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := NewVerifier([]ed25519.PublicKey{issuer.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	for _, status := range []string{AccountActive, AccountSuspended, ""} {
		var token string
		if status == "" {
			token, _, err = issuer.Issue("u1", []string{RoleUser})
		} else {
			token, _, err = issuer.IssueWithStatus("u1", []string{RoleUser}, status)
		}
		if err != nil {
			t.Fatal(err)
		}
		id, err := verifier.Verify(token)
		if err != nil || id.AccountStatus != status || id.Subject != "u1" {
			t.Errorf("a token issued with status %q verifies as %+v, %v", status, id, err)
		}
	}
}

func TestCanActFor(t *testing.T) {
	t.Parallel()
	user := Identity{Subject: "u1", Roles: []string{RoleUser}}
	if !user.CanActFor("u1") || user.CanActFor("u2") || user.IsAdmin() {
		t.Errorf("a user acts for themselves only")
	}
}

// TestVerifierRemembersOnlyUntilExpiry checks the cache of verified tokens: a remembered token
// is accepted without its signature being checked again, but never past its expiry.
func TestVerifierRemembersOnlyUntilExpiry(t *testing.T) {
	t.Parallel()
	pub, priv, _ := ed25519.GenerateKey(nil)
	issuer, err := NewIssuer(priv, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier([]ed25519.PublicKey{pub})
	if err != nil {
		t.Fatal(err)
	}
	token, exp, err := issuer.Issue("u1", []string{RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(token); err != nil {
		t.Fatal(err)
	}
	if v.verified.Len() != 1 {
		t.Fatalf("the verified token was not remembered")
	}
	// Past the expiry (and the parser's 5 s leeway) the remembered token is refused.
	v.now = func() time.Time { return exp.Add(time.Second) }
	v.parser = jwt.NewParser(jwt.WithTimeFunc(func() time.Time { return exp.Add(time.Minute) }),
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}), jwt.WithAudience(DefaultAudience), jwt.WithIssuer(DefaultIssuer),
		jwt.WithExpirationRequired())
	if _, err := v.Verify(token); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("an expired remembered token = %v, want ErrInvalidToken", err)
	}
	if v.verified.Len() != 0 {
		t.Errorf("the expired token is still remembered")
	}
	// A forged token is never remembered.
	if _, err := v.Verify(token[:len(token)-4] + "AAAA"); err == nil {
		t.Errorf("a forged token verified")
	}
}

func TestWriteKeyPair(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "keys")
	created, err := WriteKeyPair(dir)
	if err != nil || !created {
		t.Fatalf("first WriteKeyPair = %v, %v; want a new pair", created, err)
	}
	priv, err := os.ReadFile(filepath.Join(dir, PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(filepath.Join(dir, PrivateKeyFile)); info.Mode().Perm() != 0o600 {
		t.Errorf("private key mode = %v, want 0600", info.Mode().Perm())
	}
	key, err := ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := LoadPublicKey(filepath.Join(dir, PublicKeyFile))
	if err != nil || !pub.Equal(key.Public()) {
		t.Fatalf("public key %v (%v) is not the private key's", pub, err)
	}

	created, err = WriteKeyPair(dir)
	if err != nil || created {
		t.Fatalf("second WriteKeyPair = %v, %v; want the pair kept", created, err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, PrivateKeyFile)); string(again) != string(priv) {
		t.Error("the existing private key was replaced")
	}

	if err := os.Remove(filepath.Join(dir, PublicKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteKeyPair(dir); err == nil {
		t.Error("half a pair went unnoticed")
	}
}
