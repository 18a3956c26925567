// Package auth issues and verifies meshmart access tokens and carries the caller's identity in a
// context.
//
// An access token is a JWT signed with Ed25519 (alg EdDSA). The user service holds the private key
// and issues tokens at login; every other service needs only public keys to verify them, so no
// service can mint a token it was not meant to. A token names its key in the "kid" header (the
// key's RFC 7638 thumbprint, KeyID) and carries its issuer, the user id as subject, the user's
// roles, an expiry and an audience, all of which Verify checks, and the account's status when it
// was issued (Identity.AccountStatus). A Verifier holds a set of keys
// that can be replaced while it runs (SetKeys), so keys rotate without a flag day: the next key is
// published before it signs, the previous one stays until its tokens expired.
package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Role names, as they appear in a token's roles claim.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// Account statuses, as a token's "status" claim states them (Identity.AccountStatus).
const (
	AccountActive    = "active"
	AccountSuspended = "suspended"
)

// DefaultAudience is the audience meshmart tokens are issued for and checked against.
const DefaultAudience = "meshmart"

// DefaultIssuer is the issuer ("iss" claim) meshmart tokens are signed as and checked against:
// the user service.
const DefaultIssuer = "meshmart-user"

// ErrInvalidToken reports a token that is malformed, badly signed, expired or meant for another
// audience. Its message is safe to show to the caller; the cause is wrapped for the log.
var ErrInvalidToken = errors.New("invalid access token")

// Identity is the authenticated caller of a request: a user, proved by a bearer access token,
// a meshmart service, proved by its certificate, or both (a service acting for a user forwards
// the user's token over its own mutual-TLS connection). The chassis fills it in before any
// handler runs, and checks it against the method's declared policy (see pkg/authz).
type Identity struct {
	// Subject is the user id the token was issued to; empty when the call carries no token.
	Subject string
	// Roles are the roles the user held when the token was issued.
	Roles []string
	// Token is the raw bearer token, so that a service acting for the caller can forward it.
	Token string
	// Expiry is when the token stops being accepted.
	Expiry time.Time
	// AccountStatus is the account's status when the token was issued (AccountActive,
	// AccountSuspended), which stays true for at most the token's lifetime: an account suspended
	// or deleted since still holds a token saying AccountActive until it expires. Empty when the
	// token states none (one issued with Issue rather than IssueWithStatus).
	AccountStatus string
	// Service is the meshmart service ("order") whose certificate the caller presented and the
	// chassis verified; empty when the caller presented none.
	Service string
}

// IsUser reports whether the call carries a verified user token.
func (id Identity) IsUser() bool { return id.Subject != "" }

// IsService reports whether the caller proved to be a meshmart service.
func (id Identity) IsService() bool { return id.Service != "" }

// IsAdmin reports whether the identity holds the admin role.
func (id Identity) IsAdmin() bool { return slices.Contains(id.Roles, RoleAdmin) }

// CanActFor reports whether the identity may act on resources owned by userID: its own, anyone's
// when it is an admin, and anyone's when it is a meshmart service, which the method's declared
// policy let call it (the order service settling a user's payment).
func (id Identity) CanActFor(userID string) bool {
	return id.Subject == userID || id.IsAdmin() || id.IsService()
}

type identityKey struct{}

// NewContext returns a context carrying id.
func NewContext(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the identity stored in ctx by the authentication interceptor, and whether
// there was one (there is none on public methods).
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// claims is the JWT payload of an access token.
type claims struct {
	Roles  []string `json:"roles"`
	Status string   `json:"status,omitempty"`
	jwt.RegisteredClaims
}

// Issuer signs access tokens with one key, the current signing key. It is safe for concurrent
// use.
type Issuer struct {
	key  ed25519.PrivateKey
	kid  string
	opts options
	ttl  time.Duration
}

// NewIssuer returns an Issuer that signs with key tokens valid for ttl. Options set the issuer
// name (DefaultIssuer) and the audience (DefaultAudience).
func NewIssuer(key ed25519.PrivateKey, ttl time.Duration, opts ...Option) (*Issuer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("auth: the signing key is not an Ed25519 private key")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("auth: token lifetime %v is not positive", ttl)
	}
	pub := key.Public().(ed25519.PublicKey)
	return &Issuer{key: key, kid: KeyID(pub), opts: newOptions(opts), ttl: ttl}, nil
}

// Name is the issuer name, the "iss" claim of every token it signs.
func (i *Issuer) Name() string { return i.opts.issuer }

// PublicKey is the public half of the signing key.
func (i *Issuer) PublicKey() ed25519.PublicKey { return i.key.Public().(ed25519.PublicKey) }

// KeyID is the signing key's id, the "kid" header of every token it signs (see KeyID).
func (i *Issuer) KeyID() string { return i.kid }

// Issue returns a signed token for subject holding roles, and when it expires.
func (i *Issuer) Issue(subject string, roles []string) (string, time.Time, error) {
	return i.IssueAt(time.Now(), subject, roles)
}

// IssueWithStatus is Issue for a token that also states the account's status (AccountActive,
// AccountSuspended; see Identity.AccountStatus), so that a service may take the token's word for
// it, for the token's lifetime, instead of asking the user service.
func (i *Issuer) IssueWithStatus(subject string, roles []string, status string) (string, time.Time, error) {
	return i.issue(time.Now(), subject, roles, status)
}

// IssueAt is Issue as if the time were now; tests use it to mint expired tokens.
func (i *Issuer) IssueAt(now time.Time, subject string, roles []string) (string, time.Time, error) {
	return i.issue(now, subject, roles, "")
}

// issue signs a token issued at now; status empty states none.
func (i *Issuer) issue(now time.Time, subject string, roles []string, status string) (string, time.Time, error) {
	exp := now.Add(i.ttl)
	token := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims{
		Roles: roles, Status: status,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    i.opts.issuer,
			Subject:   subject,
			Audience:  jwt.ClaimStrings{i.opts.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	})
	token.Header["kid"] = i.kid
	signed, err := token.SignedString(i.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp, nil
}

// verifiedCacheSize bounds how many verified tokens a Verifier remembers.
const verifiedCacheSize = 10_000

// RefreshGap is the shortest time between two refreshes a Verifier asks for (see
// Verifier.RefreshRequests): a stream of tokens with made-up key ids must not turn into a
// stream of calls to the user service.
const RefreshGap = 5 * time.Second

// ErrNoKeys reports that a Verifier holds no key yet (its keys are fetched and none arrived):
// the token may be fine, the service is not ready to tell. It wraps ErrInvalidToken.
var ErrNoKeys = fmt.Errorf("%w: no token keys yet", ErrInvalidToken)

// keySet is one immutable generation of a Verifier's keys, by key id.
type keySet map[string]ed25519.PublicKey

// verifiedToken is a remembered verification: the identity and the key that proved it.
type verifiedToken struct {
	id  Identity
	kid string
}

// Verifier checks access tokens against a set of public keys, chosen by the token's "kid"
// header, and requires the issuer and audience it was built for. It is safe for concurrent use,
// SetKeys included.
//
// It remembers the tokens it verified (up to 10,000, least recently used first out): an Ed25519
// signature check costs tens of microseconds, about half of the chassis' own CPU time on a
// simple read, and a client sends the same token with every call until it expires. A remembered
// token is still refused once expired, or once the key that verified it left the set.
type Verifier struct {
	keys     atomic.Pointer[keySet]
	parser   *jwt.Parser
	verified *lru.Cache[string, verifiedToken]
	now      func() time.Time

	refresh     chan struct{}
	lastRefresh atomic.Int64 // unix nanoseconds of the last refresh asked for
	refreshGap  time.Duration

	ready     chan struct{} // closed once the verifier first holds a key
	readyOnce sync.Once
}

// NewVerifier returns a Verifier accepting tokens signed by the private half of any of keys
// (none is allowed: a Verifier whose keys are fetched starts empty and refuses every token with
// ErrNoKeys until SetKeys). Options set the issuer (DefaultIssuer) and the audience
// (DefaultAudience) tokens must carry.
func NewVerifier(keys []ed25519.PublicKey, opts ...Option) (*Verifier, error) {
	o := newOptions(opts)
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithAudience(o.audience),
		jwt.WithIssuer(o.issuer),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
	)
	verified, err := lru.New[string, verifiedToken](verifiedCacheSize)
	if err != nil {
		return nil, err
	}
	v := &Verifier{parser: parser, verified: verified, now: time.Now, refresh: make(chan struct{}, 1), refreshGap: RefreshGap,
		ready: make(chan struct{})}
	if err := v.SetKeys(keys); err != nil {
		return nil, err
	}
	return v, nil
}

// SetKeys replaces the keys tokens are verified with. Tokens verified by a key that is not in
// keys are forgotten, so that they stop verifying at once; tokens of the keys that stay are
// still remembered.
func (v *Verifier) SetKeys(keys []ed25519.PublicKey) error {
	set := make(keySet, len(keys))
	for _, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return errors.New("auth: a verification key is not an Ed25519 public key")
		}
		set[KeyID(k)] = slices.Clone(k)
	}
	old := v.keys.Swap(&set)
	if len(set) > 0 {
		v.readyOnce.Do(func() { close(v.ready) })
	}
	if old != nil {
		for kid := range *old {
			if _, ok := set[kid]; !ok {
				// A key left: purge everything rather than walk the cache. Verify also checks
				// a remembered token's key, so a verification that races this purge and
				// remembers its token afterwards is refused all the same.
				v.verified.Purge()
				break
			}
		}
	}
	return nil
}

// Ready is closed once the verifier holds a key: a server whose keys are fetched reports itself
// serving only then (see pkg/app), so that no call reaches it before it can verify tokens.
func (v *Verifier) Ready() <-chan struct{} { return v.ready }

// KeyIDs returns the ids of the keys tokens are verified with, sorted.
func (v *Verifier) KeyIDs() []string {
	set := *v.keys.Load()
	ids := make([]string, 0, len(set))
	for kid := range set {
		ids = append(ids, kid)
	}
	slices.Sort(ids)
	return ids
}

// RefreshRequests delivers a value when Verify met a token whose key id it does not know: whoever
// fetches the keys should fetch them now (the key may have just been published). Requests are at
// least RefreshGap apart, and one that nobody took yet is not repeated.
func (v *Verifier) RefreshRequests() <-chan struct{} { return v.refresh }

func (v *Verifier) askRefresh() {
	now := v.now().UnixNano()
	last := v.lastRefresh.Load()
	if now-last < int64(v.refreshGap) || !v.lastRefresh.CompareAndSwap(last, now) {
		return
	}
	select {
	case v.refresh <- struct{}{}:
	default:
	}
}

// Verify checks token's key id, signature, issuer, audience, expiry and subject and returns the
// identity it carries. Every failure wraps ErrInvalidToken; a token whose key id is unknown also
// asks for a refresh of the keys (see RefreshRequests).
func (v *Verifier) Verify(token string) (Identity, error) {
	set := *v.keys.Load()
	if t, ok := v.verified.Get(token); ok {
		if _, known := set[t.kid]; known && v.now().Before(t.id.Expiry) {
			return t.id, nil
		}
		v.verified.Remove(token)
	}
	var c claims
	var kid string
	_, err := v.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ = t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("no key id (kid)")
		}
		key, ok := set[kid]
		if !ok {
			v.askRefresh()
			if len(set) == 0 {
				return nil, ErrNoKeys
			}
			return nil, fmt.Errorf("unknown key id %q", kid)
		}
		return key, nil
	})
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return Identity{}, fmt.Errorf("%w: no subject", ErrInvalidToken)
	}
	id := Identity{Subject: c.Subject, Roles: c.Roles, Token: token, Expiry: c.ExpiresAt.Time, AccountStatus: c.Status}
	v.verified.Add(token, verifiedToken{id: id, kid: kid})
	return id, nil
}

// KeyID returns key's id: its RFC 7638 JWK thumbprint, the unpadded base64url SHA-256 of
// {"crv":"Ed25519","kty":"OKP","x":"<unpadded base64url key>"}. Every replica and every
// verifier derives the same id from the same key, so ids need no coordination.
func KeyID(key ed25519.PublicKey) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + base64.RawURLEncoding.EncodeToString(key) + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// GenerateKey returns a new Ed25519 key pair, PEM-encoded as EncodeKey does.
func GenerateKey() (privatePEM, publicPEM []byte, err error) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, nil, err
	}
	return EncodeKey(priv)
}

// Key pair file names, as WriteKeyPair writes them.
const (
	PrivateKeyFile = "auth.key.pem"
	PublicKeyFile  = "auth.pub.pem"
)

// WriteKeyPair makes sure dir holds a key pair: PrivateKeyFile (mode 0600), the key the user
// service signs tokens with, and PublicKeyFile (0644), its public half (for -auth-public-key
// set-ups; the other services normally fetch the public keys from the user service).
// An existing pair is kept, so every replica and every restart shares one key; created reports
// whether this call wrote it. It is how development keys are made (`make keys`, `make run`, and
// the docker compose stack's keys step); production keys come from a secret store.
func WriteKeyPair(dir string) (created bool, err error) {
	priv, pub := filepath.Join(dir, PrivateKeyFile), filepath.Join(dir, PublicKeyFile)
	if _, err := os.Stat(priv); err == nil {
		if _, err := os.Stat(pub); err != nil {
			return false, fmt.Errorf("auth: %s exists without %s", priv, pub)
		}
		return false, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	privPEM, pubPEM, err := GenerateKey()
	if err != nil {
		return false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	// The public key first: a crash in between leaves no private key, so the next call starts
	// over instead of finding half a pair.
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		return false, err
	}
	if err := os.WriteFile(priv, privPEM, 0o600); err != nil {
		return false, err
	}
	return true, nil
}

// EncodeKey PEM-encodes priv as PKCS #8 and its public half as PKIX.
func EncodeKey(priv ed25519.PrivateKey) (privatePEM, publicPEM []byte, err error) {
	privDER, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}

// ParsePrivateKey decodes a PEM-encoded PKCS #8 Ed25519 private key.
func ParsePrivateKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("auth: no PEM \"PRIVATE KEY\" block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: parse private key: %w", err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("auth: private key is %T, not Ed25519", key)
	}
	return priv, nil
}

// ParsePublicKey decodes a PEM-encoded PKIX Ed25519 public key.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("auth: no PEM \"PUBLIC KEY\" block")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("auth: parse public key: %w", err)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("auth: public key is %T, not Ed25519", key)
	}
	return pub, nil
}

// ParseVerificationKey decodes a PEM-encoded Ed25519 public key, or the public half of a
// PEM-encoded private key: the keys the user service publishes beside its signing key may be
// given either way.
func ParseVerificationKey(data []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block != nil && block.Type == "PRIVATE KEY" {
		priv, err := ParsePrivateKey(data)
		if err != nil {
			return nil, err
		}
		return priv.Public().(ed25519.PublicKey), nil
	}
	return ParsePublicKey(data)
}

// LoadVerificationKey reads a key file as ParseVerificationKey decodes it.
func LoadVerificationKey(path string) (ed25519.PublicKey, error) {
	key, err := load(path, ParseVerificationKey)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// LoadPublicKey reads a PEM-encoded Ed25519 public key from a file.
func LoadPublicKey(path string) (ed25519.PublicKey, error) { return load(path, ParsePublicKey) }

// LoadPrivateKey reads a PEM-encoded Ed25519 private key from a file.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) { return load(path, ParsePrivateKey) }

func load[K any](path string, parse func([]byte) (K, error)) (K, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var zero K
		return zero, fmt.Errorf("auth: %w", err)
	}
	return parse(data)
}
