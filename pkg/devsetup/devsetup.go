// Package devsetup makes the development secrets of a whole platform in one directory: the
// development CA and every service's SPIFFE identity, the token-signing key (the user service's
// alone), the Consul ACL with a token per service, and the first admin's password. `make keys`,
// the platform launcher behind `make run` and the compose stack's setup step (pkg/cmd/devsetup)
// all make them here, the same way. Production brings its own CA, key and tokens: see
// docs/operations.md, "Identities".
//
// The layout gives each service one directory holding everything it needs and nothing of
// another's, so that a container mounts its own directory only:
//
//	DIR/ca.pem, DIR/ca.key.pem          the CA (its key stays here)
//	DIR/<service>/cert.pem, key.pem     the service's identity (an X.509 SVID)
//	DIR/<service>/ca.pem                the trust bundle
//	DIR/<service>/consul.token          its Consul ACL token (registers only itself)
//	DIR/user/auth.key.pem, auth.pub.pem the token-signing key pair: in the user's directory only
//	DIR/consul/                         the agent's ACL configuration (agent.hcl), the ACL
//	                                    (acl.json), the management and reader tokens
//	DIR/prometheus/consul.token         the reader token, for Prometheus' Consul discovery
//	DIR/admin/password                  the first admin's password (`user admin`)
//
// WritePostgres adds what a platform on PostgreSQL needs (compose, Swarm):
//
//	DIR/<service>/database-url          the service's DSN, with its own role's password
//	DIR/admin/database-url              the user service's DSN, for `user admin`
//	DIR/postgres/password               the superuser's password (POSTGRES_PASSWORD_FILE)
//	DIR/postgres/init.sql               a role and a database per service, for the server's first
//	                                    start (/docker-entrypoint-initdb.d)
//	DIR/postgres/<role>.password        each role's password, kept across runs
package devsetup

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/identity"
)

// SigningService is the service that holds the token-signing key.
const SigningService = "user"

// AdminEmail is the first admin's email.
const AdminEmail = "admin@meshmart.local"

// Secrets are the development secrets in Dir.
type Secrets struct {
	Dir string
	CA  *identity.DevCA
	ACL consul.ACL
	// AdminPassword is the first admin's password.
	AdminPassword string
}

// Write makes sure dir holds the development secrets of services (see the package comment),
// keeping whatever is there and valid, so that every restart finds the same CA, keys, tokens and
// password. hosts names, per service, extra host names its certificate carries (container names).
func Write(dir string, services []string, hosts map[string][]string) (*Secrets, error) {
	ca, err := identity.OpenDevCA(dir, spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain))
	if err != nil {
		return nil, err
	}
	s := &Secrets{Dir: dir, CA: ca}
	aclFile := filepath.Join(dir, "consul", "acl.json")
	s.ACL, err = consul.LoadACL(aclFile)
	switch {
	case errors.Is(err, fs.ErrNotExist) || err == nil && !hasAll(s.ACL, services):
		s.ACL = consul.NewACL(services...)
		if err := s.ACL.Save(aclFile); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, err
	}
	for _, svc := range services {
		if _, err := ca.Ensure(svc, hosts[svc]...); err != nil {
			return nil, fmt.Errorf("identity of %s: %w", svc, err)
		}
		if err := writeSecret(filepath.Join(dir, svc, "consul.token"), s.ACL.Services[svc].SecretID); err != nil {
			return nil, err
		}
		if svc == SigningService {
			if _, err := auth.WriteKeyPair(filepath.Join(dir, svc)); err != nil {
				return nil, err
			}
		}
	}
	consulDir := filepath.Join(dir, "consul")
	for name, value := range map[string]string{
		"agent.hcl":        s.ACL.AgentConfig(),
		"management.token": s.ACL.Management,
		"reader.token":     s.ACL.Reader.SecretID,
	} {
		if err := writeSecret(filepath.Join(consulDir, name), value); err != nil {
			return nil, err
		}
	}
	// Prometheus discovers the instances through the catalog: it gets the reader token only.
	if err := writeSecret(filepath.Join(dir, "prometheus", "consul.token"), s.ACL.Reader.SecretID); err != nil {
		return nil, err
	}
	if s.AdminPassword, err = keptPassword(filepath.Join(dir, "admin", "password")); err != nil {
		return nil, err
	}
	return s, nil
}

// DataServices are the services that keep a database.
var DataServices = []string{"user", "order", "payment"}

// WritePostgres makes sure dir holds the PostgreSQL secrets of DataServices for a server at addr
// (host:port, as the services reach it): a role and a database per service (user_service owns
// meshmart_user, ...), each role with a random password kept across runs, and every service's
// DSN in its own directory. The DSNs disable TLS to the server, as a development network
// does; production passes its own DSN (docs/operations.md, "Secrets").
func WritePostgres(dir, addr string) error {
	// The server reads the superuser's password from its file (POSTGRES_PASSWORD_FILE).
	if _, err := keptPassword(filepath.Join(dir, "postgres", "password")); err != nil {
		return err
	}
	var init strings.Builder
	init.WriteString("-- One database per service, each owned by the service's own role. Made by devsetup;\n" +
		"-- the server runs it once, when its data directory is new.\n")
	for _, svc := range DataServices {
		role, db := svc+"_service", "meshmart_"+svc
		pw, err := keptPassword(filepath.Join(dir, "postgres", role+".password"))
		if err != nil {
			return err
		}
		// The password is hex, so it needs no quoting beyond the literal's quotes.
		// PostgreSQL lets every role connect to a new database: only its owner may here.
		fmt.Fprintf(&init, "CREATE ROLE %s LOGIN PASSWORD '%s';\nCREATE DATABASE %s OWNER %s;\nREVOKE ALL ON DATABASE %s FROM PUBLIC;\n",
			role, pw, db, role, db)
		dsn := (&url.URL{Scheme: "postgres", User: url.UserPassword(role, pw), Host: addr, Path: "/" + db, RawQuery: "sslmode=disable"}).String()
		if err := writeSecret(filepath.Join(dir, svc, "database-url"), dsn); err != nil {
			return err
		}
		if svc == SigningService {
			if err := writeSecret(filepath.Join(dir, "admin", "database-url"), dsn); err != nil {
				return err
			}
		}
	}
	return writeSecret(filepath.Join(dir, "postgres", "init.sql"), init.String())
}

// keptPassword returns the password in path, making a random one first if there is none.
func keptPassword(path string) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(strings.TrimSpace(string(b))) > 0:
		return strings.TrimSpace(string(b)), nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", err
	}
	r := make([]byte, 18)
	if _, err := rand.Read(r); err != nil {
		return "", err
	}
	pw := hex.EncodeToString(r)
	return pw, writeSecret(path, pw)
}

func hasAll(a consul.ACL, services []string) bool {
	for _, s := range services {
		if _, ok := a.Services[s]; !ok {
			return false
		}
	}
	return true
}

// writeSecret writes value to path, mode 0600, in a directory only its owner may list.
func writeSecret(path, value string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(value), 0o600)
}

// ServiceDir is the directory of service's secrets.
func (s *Secrets) ServiceDir(service string) string { return filepath.Join(s.Dir, service) }

// BundleFile is the CA bundle that verifies every service (grpcurl -cacert).
func (s *Secrets) BundleFile() string { return s.CA.BundleFile() }

// ReaderTokenFile holds the Consul token that may read the catalog.
func (s *Secrets) ReaderTokenFile() string { return filepath.Join(s.Dir, "consul", "reader.token") }

// AdminPasswordFile holds the first admin's password.
func (s *Secrets) AdminPasswordFile() string { return filepath.Join(s.Dir, "admin", "password") }

// Env is the environment that gives service, found in dir (as mounted where it runs), its
// identity and its Consul token, and the user service its signing key.
func Env(service, dir string) []string {
	env := []string{
		"MESHMART_TLS_CERT=" + filepath.Join(dir, identity.CertFile),
		"MESHMART_TLS_KEY=" + filepath.Join(dir, identity.KeyFile),
		"MESHMART_TLS_CA=" + filepath.Join(dir, identity.CAFile),
		"CONSUL_HTTP_TOKEN_FILE=" + filepath.Join(dir, "consul.token"),
	}
	if service == SigningService {
		env = append(env, "MESHMART_SIGNING_KEY="+filepath.Join(dir, auth.PrivateKeyFile))
	}
	return env
}
