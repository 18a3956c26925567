package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// File names in a development PKI directory (see DevCA.Issue): DIR/ca.pem is the trust bundle,
// DIR/ca.key.pem the CA's key, and DIR/<service>/ holds each service's cert.pem, key.pem and a
// copy of ca.pem, so that one directory (a container volume) carries all a service needs and
// nothing of another's.
const (
	CAFile   = "ca.pem"
	CAKey    = "ca.key.pem"
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// Lifetimes of development certificates. A leaf is issued again when less than leafRenew of it
// is left, so a long-lived development directory keeps working.
const (
	caLifetime   = 10 * 365 * 24 * time.Hour
	leafLifetime = 90 * 24 * time.Hour
	leafRenew    = 7 * 24 * time.Hour
)

// DevCA is a development certificate authority: the trust domain's root, whose key lives in a
// directory on disk. It is what `make keys`, the platform launcher and the compose stack's setup
// step use; production brings its own CA (see docs/operations.md, "Identities").
type DevCA struct {
	dir  string
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// OpenDevCA loads the CA in dir, making one for trust domain td when there is none.
func OpenDevCA(dir string, td spiffeid.TrustDomain) (*DevCA, error) {
	ca := &DevCA{dir: dir, td: td}
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKey)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("identity: %s without its key: %w", certPath, err)
		}
		if ca.cert, err = parseCert(certPEM); err != nil {
			return nil, fmt.Errorf("identity: %s: %w", certPath, err)
		}
		if ca.key, err = parseECKey(keyPEM); err != nil {
			return nil, fmt.Errorf("identity: %s: %w", keyPath, err)
		}
		return ca, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if ca.key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"meshmart development"}, CommonName: "meshmart development CA"},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &ca.key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	if ca.cert, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// The key first: a crash in between leaves no certificate, so the next call starts over.
	if err := writePEM(keyPath, "PRIVATE KEY", mustPKCS8(ca.key), 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// TrustDomain is the CA's trust domain.
func (ca *DevCA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// BundleFile is the path of the CA's certificate, the trust bundle every service and client
// verifies peers with.
func (ca *DevCA) BundleFile() string { return filepath.Join(ca.dir, CAFile) }

// Dir is where Issue writes the identity of service.
func (ca *DevCA) Dir(service string) string { return filepath.Join(ca.dir, service) }

// Ensure makes sure Dir(service) holds a valid identity for service, issuing one (Issue) when it
// is missing, from another CA, or close to expiry; created reports whether it did.
func (ca *DevCA) Ensure(service string, hosts ...string) (created bool, err error) {
	certPEM, err := os.ReadFile(filepath.Join(ca.Dir(service), CertFile))
	if err == nil {
		if cert, perr := parseCert(certPEM); perr == nil && cert.CheckSignatureFrom(ca.cert) == nil &&
			time.Until(cert.NotAfter) > leafRenew {
			if _, statErr := os.Stat(filepath.Join(ca.Dir(service), KeyFile)); statErr == nil {
				return false, nil
			}
		}
	}
	return true, ca.Issue(service, hosts...)
}

// Issue writes a new key and certificate for service into Dir(service), with the CA bundle
// beside them: an X.509 SVID whose URI SAN is the service's SPIFFE ID, good for both ends of a
// connection, that also names localhost, 127.0.0.1, ::1, the service's name and hosts as DNS
// names or IP addresses, so that grpcurl and other plain TLS clients verify it by host name. The
// files are replaced atomically (written beside, then renamed), key first, so that a watching
// Files source never reads a half-written file.
func (ca *DevCA) Issue(service string, hosts ...string) error {
	id, err := ServiceID(ca.td, service)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{Organization: []string{"meshmart development"}, CommonName: service},
		URIs:         []*url.URL{id.URL()},
		DNSNames:     []string{"localhost", service},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return err
	}
	dir := ca.Dir(service)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", ca.cert.Raw, 0o644); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, KeyFile), "PRIVATE KEY", mustPKCS8(key), 0o600); err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, CertFile), "CERTIFICATE", der, 0o644)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

func mustPKCS8(key *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return der
}

// writePEM replaces path atomically with one PEM block.
func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func parseCert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

func parseECKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the CA key is %T, not ECDSA", key)
	}
	return ec, nil
}
