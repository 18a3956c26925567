package devsetup_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/devsetup"
	"github.com/meshmart/meshmart/pkg/identity"
)

var services = []string{"user", "payment", "order"}

// TestWriteKeepsEachServiceToItsOwnDirectory: every service's directory holds its identity, the
// trust bundle and its Consul token, only the user's holds the signing key, and a second Write
// keeps everything (restarts find the same CA, tokens and password).
func TestWriteKeepsEachServiceToItsOwnDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := devsetup.Write(dir, services, map[string][]string{"order": {"order-1"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range services {
		src, err := identity.LoadFiles(filepath.Join(first.ServiceDir(svc), identity.CertFile),
			filepath.Join(first.ServiceDir(svc), identity.KeyFile), filepath.Join(first.ServiceDir(svc), identity.CAFile), nil)
		if err != nil {
			t.Fatalf("%s's identity: %v", svc, err)
		}
		svid, _ := src.GetX509SVID()
		if got, want := svid.ID.String(), "spiffe://meshmart.local/service/"+svc; got != want {
			t.Errorf("%s's SPIFFE ID = %s, want %s", svc, got, want)
		}
		token, err := os.ReadFile(filepath.Join(first.ServiceDir(svc), "consul.token"))
		if err != nil || string(token) != first.ACL.Services[svc].SecretID {
			t.Errorf("%s's Consul token = %q, %v", svc, token, err)
		}
		_, err = os.Stat(filepath.Join(first.ServiceDir(svc), "auth.key.pem"))
		if hasKey := err == nil; hasKey != (svc == devsetup.SigningService) {
			t.Errorf("%s holds the signing key: %v", svc, hasKey)
		}
		env := strings.Join(devsetup.Env(svc, first.ServiceDir(svc)), " ")
		if strings.Contains(env, "MESHMART_SIGNING_KEY") != (svc == devsetup.SigningService) {
			t.Errorf("%s's environment: %s", svc, env)
		}
		if info, err := os.Stat(filepath.Join(first.ServiceDir(svc), identity.KeyFile)); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s's key file mode: %v, %v", svc, info.Mode(), err)
		}
	}
	again, err := devsetup.Write(dir, services, nil)
	if err != nil {
		t.Fatal(err)
	}
	if again.ACL.Management != first.ACL.Management || again.AdminPassword != first.AdminPassword ||
		again.ACL.Services["payment"] != first.ACL.Services["payment"] {
		t.Error("a second Write did not keep the ACL and the admin's password")
	}
	if again.AdminPassword == "" || len(again.AdminPassword) < 24 {
		t.Errorf("admin password %q is too weak", again.AdminPassword)
	}
	names, _ := os.ReadDir(dir)
	var got []string
	for _, n := range names {
		got = append(got, n.Name())
	}
	for _, want := range []string{"admin", "ca.key.pem", "ca.pem", "consul", "order", "payment", "prometheus", "user"} {
		if !slices.Contains(got, want) {
			t.Errorf("%s lacks %s: %v", dir, want, got)
		}
	}
}
