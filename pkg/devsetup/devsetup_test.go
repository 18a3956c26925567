package devsetup_test

import (
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/meshmart/meshmart/pkg/devsetup"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/testkit"
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

// TestWritePostgresGivesEachServiceItsOwnRole runs the init.sql WritePostgres makes on a real
// server, as the server's first start does, and signs in with every service's DSN: each reaches
// its own database as its own role, and no other service's.
func TestWritePostgresGivesEachServiceItsOwnRole(t *testing.T) {
	t.Parallel()
	pg := testkit.StartPostgres(t)
	admin, err := url.Parse(pg.Admin)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := devsetup.WritePostgres(dir, admin.Host); err != nil {
		t.Fatal(err)
	}
	initSQL, err := os.ReadFile(filepath.Join(dir, "postgres", "init.sql"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, pg.Admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// One statement at a time, as psql runs the file: CREATE DATABASE refuses a transaction.
	for _, stmt := range strings.Split(string(initSQL), ";\n") {
		if strings.TrimSpace(stmt) == "" || strings.HasPrefix(strings.TrimSpace(stmt), "--") && !strings.Contains(stmt, "CREATE") {
			continue
		}
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("init.sql: %s: %v", stmt, err)
		}
	}
	dsns := map[string]string{}
	for _, svc := range devsetup.DataServices {
		b, err := os.ReadFile(filepath.Join(dir, svc, "database-url"))
		if err != nil {
			t.Fatal(err)
		}
		dsns[svc] = string(b)
		c, err := pgx.Connect(ctx, dsns[svc])
		if err != nil {
			t.Fatalf("%s's DSN: %v", svc, err)
		}
		var who, db string
		if err := c.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&who, &db); err != nil || who != svc+"_service" || db != "meshmart_"+svc {
			t.Errorf("%s signs in as %s on %s (%v)", svc, who, db, err)
		}
		c.Close(ctx)
		if info, err := os.Stat(filepath.Join(dir, svc, "database-url")); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s's DSN file mode: %v, %v", svc, info.Mode(), err)
		}
	}
	// A service's password does not open another's database.
	other, _ := url.Parse(dsns["order"])
	other.Path = "/meshmart_payment"
	if c, err := pgx.Connect(ctx, other.String()); err == nil {
		c.Close(ctx)
		t.Error("order's role connects to meshmart_payment")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "admin", "database-url")); string(b) != dsns["user"] {
		t.Errorf("the admin one-shot's DSN = %q, want the user service's", b)
	}
	if err := devsetup.WritePostgres(dir, admin.Host); err != nil {
		t.Fatal(err)
	}
	for _, svc := range devsetup.DataServices {
		if b, _ := os.ReadFile(filepath.Join(dir, svc, "database-url")); string(b) != dsns[svc] {
			t.Errorf("a second WritePostgres changed %s's DSN", svc)
		}
	}
}
