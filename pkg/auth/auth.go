// Package auth issues and verifies meshmart access tokens and carries the caller's identity in a
// context.
//
// An access token is a JWT signed with Ed25519 (alg EdDSA). The user service holds the private key
// and issues tokens at login; every other service needs only the public key to verify them, so no
// service can mint a token it was not meant to. Tokens carry the user id as subject, the user's
// roles, an expiry and an audience, all of which Verify checks.
package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"
)

// Role names, as they appear in a token's roles claim.
const (
	RoleUser  = "user"
	RoleAdmin = "admin"
)

// DefaultAudience is the audience meshmart tokens are issued for and checked against.
const DefaultAudience = "meshmart"

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
	Roles []string `json:"roles"`
	jwt.RegisteredClaims
}

// Issuer signs access tokens. It is safe for concurrent use.
type Issuer struct {
	key      ed25519.PrivateKey
	audience string
	ttl      time.Duration
}

// NewIssuer returns an Issuer that signs with key tokens valid for ttl, for audience (empty means
// DefaultAudience).
func NewIssuer(key ed25519.PrivateKey, audience string, ttl time.Duration) (*Issuer, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("auth: the signing key is not an Ed25519 private key")
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("auth: token lifetime %v is not positive", ttl)
	}
	if audience == "" {
		audience = DefaultAudience
	}
	return &Issuer{key: key, audience: audience, ttl: ttl}, nil
}

// Issue returns a signed token for subject holding roles, and when it expires.
func (i *Issuer) Issue(subject string, roles []string) (string, time.Time, error) {
	return i.IssueAt(time.Now(), subject, roles)
}

// IssueAt is Issue as if the time were now; tests use it to mint expired tokens.
func (i *Issuer) IssueAt(now time.Time, subject string, roles []string) (string, time.Time, error) {
	exp := now.Add(i.ttl)
	token := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims{
		Roles: roles,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   subject,
			Audience:  jwt.ClaimStrings{i.audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
	})
	signed, err := token.SignedString(i.key)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return signed, exp, nil
}

// verifiedCacheSize bounds how many verified tokens a Verifier remembers.
const verifiedCacheSize = 10_000

// Verifier checks access tokens. It is safe for concurrent use.
//
// It remembers the tokens it verified (up to 10,000, least recently used first out): an Ed25519
// signature check costs tens of microseconds, about half of the chassis' own CPU time on a
// simple read, and a client sends the same token with every call until it expires. A remembered
// token is still refused once expired; a token is immutable, so nothing else can change.
type Verifier struct {
	key      ed25519.PublicKey
	parser   *jwt.Parser
	verified *lru.Cache[string, Identity]
	now      func() time.Time
}

// NewVerifier returns a Verifier accepting tokens signed by the private half of key for audience
// (empty means DefaultAudience).
func NewVerifier(key ed25519.PublicKey, audience string) (*Verifier, error) {
	if len(key) != ed25519.PublicKeySize {
		return nil, errors.New("auth: the verification key is not an Ed25519 public key")
	}
	if audience == "" {
		audience = DefaultAudience
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
	)
	verified, err := lru.New[string, Identity](verifiedCacheSize)
	if err != nil {
		return nil, err
	}
	return &Verifier{key: key, parser: parser, verified: verified, now: time.Now}, nil
}

// Verify checks token's signature, expiry and audience and returns the identity it carries. Every
// failure wraps ErrInvalidToken.
func (v *Verifier) Verify(token string) (Identity, error) {
	if id, ok := v.verified.Get(token); ok {
		if v.now().Before(id.Expiry) {
			return id, nil
		}
		v.verified.Remove(token)
	}
	var c claims
	_, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.key, nil })
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	if c.Subject == "" {
		return Identity{}, fmt.Errorf("%w: no subject", ErrInvalidToken)
	}
	id := Identity{Subject: c.Subject, Roles: c.Roles, Token: token, Expiry: c.ExpiresAt.Time}
	v.verified.Add(token, id)
	return id, nil
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
// service signs tokens with, and PublicKeyFile (0644), the key every service verifies them with.
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
