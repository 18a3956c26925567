package testkit

import (
	"context"
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/server"
)

// PKI is a throw-away development CA (pkg/identity) of the trust domain meshmart.local, in the
// test's temporary directory, issuing SPIFFE identities to services.
type PKI struct {
	CA *identity.DevCA
	t  testing.TB
}

// NewPKI makes a CA and an identity for each of services.
func NewPKI(t testing.TB, services ...string) PKI {
	t.Helper()
	ca, err := identity.OpenDevCA(filepath.Join(t.TempDir(), "pki"), TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	p := PKI{CA: ca, t: t}
	for _, s := range services {
		p.Issue(s)
	}
	return p
}

// TrustDomain is the development trust domain, meshmart.local.
func TrustDomain() spiffeid.TrustDomain {
	return spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
}

// Issue issues (again) the identity of service: a new key and certificate.
func (p PKI) Issue(service string) {
	p.t.Helper()
	if err := p.CA.Issue(service); err != nil {
		p.t.Fatal(err)
	}
}

// Files returns the paths of service's certificate, key and CA bundle.
func (p PKI) Files(service string) (cert, key, ca string) {
	dir := p.CA.Dir(service)
	return filepath.Join(dir, identity.CertFile), filepath.Join(dir, identity.KeyFile), filepath.Join(dir, identity.CAFile)
}

// Configure gives cfg the identity of service (TLS on, plaintext off).
func (p PKI) Configure(cfg *server.Config, service string) {
	cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = p.Files(service)
	cfg.InsecurePlaintext = false
}

// Env is the environment that gives a service binary the identity of service.
func (p PKI) Env(service string) []string {
	cert, key, ca := p.Files(service)
	return []string{"MESHMART_TLS_CERT=" + cert, "MESHMART_TLS_KEY=" + key, "MESHMART_TLS_CA=" + ca}
}

// Identity is service's identity as a Source, for clients that call as that service.
func (p PKI) Identity(service string) *identity.Files {
	p.t.Helper()
	cert, key, ca := p.Files(service)
	f, err := identity.LoadFiles(cert, key, ca, DiscardLogger())
	if err != nil {
		p.t.Fatal(err)
	}
	return f
}

// As is the client option that calls as service (mutual TLS).
func (p PKI) As(service string) client.Option { return client.WithIdentity(p.Identity(service)) }

// Anonymous is the client option that verifies the server but presents no certificate, as a
// user's client does.
func (p PKI) Anonymous() client.Option {
	p.t.Helper()
	b, err := identity.LoadBundle(TrustDomain(), p.CA.BundleFile(), DiscardLogger())
	if err != nil {
		p.t.Fatal(err)
	}
	return client.WithTrustBundle(b, TrustDomain())
}

// Keys are a fresh access-token key pair: the public key's PEM file, for servers
// (server.Config.AuthPublicKey), and an issuer holding the private key, for minting tokens with
// its key id and the default issuer and audience, which the servers' verifier expects.
type Keys struct {
	PublicKeyFile string
	Issuer        *auth.Issuer
}

// NewKeys writes a fresh Ed25519 key pair and returns it with an issuer of hour-long tokens for
// the default issuer and audience.
func NewKeys(t testing.TB) Keys {
	t.Helper()
	privPEM, pubPEM, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "auth.pub.pem")
	if err := os.WriteFile(path, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	priv, err := auth.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := auth.NewIssuer(priv, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return Keys{PublicKeyFile: path, Issuer: issuer}
}

// Token mints a token for subject with roles, failing the test on error.
func (k Keys) Token(t testing.TB, subject string, roles ...string) string {
	t.Helper()
	token, _, err := k.Issuer.Issue(subject, roles)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// Verifier returns a verifier that accepts the tokens k mints (and only those), for servers
// given one with server.WithVerifier.
func (k Keys) Verifier(t testing.TB) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier([]ed25519.PublicKey{k.Issuer.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Context returns a context whose outgoing calls carry a token for subject with roles.
func (k Keys) Context(t testing.TB, subject string, roles ...string) context.Context {
	t.Helper()
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+k.Token(t, subject, roles...))
}

// ExpiredToken mints a token for subject that expired an hour ago.
func (k Keys) ExpiredToken(t testing.TB, subject string) string {
	t.Helper()
	token, _, err := k.Issuer.IssueAt(time.Now().Add(-2*time.Hour), subject, []string{auth.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	return token
}
