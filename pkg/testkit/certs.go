package testkit

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/meshmart/meshmart/pkg/auth"
)

// Certs are PEM files of a throw-away CA and a server and a client certificate it signed, valid
// for localhost and 127.0.0.1.
type Certs struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// NewCerts writes a fresh CA, server and client certificate into a temporary directory.
func NewCerts(t testing.TB) Certs {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "meshmart test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	c := Certs{CA: filepath.Join(dir, "ca.pem")}
	writePEM(t, c.CA, "CERTIFICATE", caDER)

	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(t, certPath, "CERTIFICATE", der)
		writePEM(t, keyPath, "PRIVATE KEY", keyDER)
		return certPath, keyPath
	}
	c.ServerCert, c.ServerKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	c.ClientCert, c.ClientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return c
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
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
