package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshmart/meshmart/pkg/proc"
)

// SQLitePath returns the path of a fresh SQLite database file in a temporary directory, removed
// when the test ends.
func SQLitePath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "test.sqlite")
}

// PostgresURL returns the URL of a fresh, empty PostgreSQL database, dropped when the test ends.
//
// The database is created on the server named by TEST_POSTGRES_URL (a URL whose user may create
// databases) when that is set; otherwise on a throw-away cluster this test binary starts once
// with initdb and postgres, run as the postgres user when the test runs as root. Without either
// the test fails, saying what to install.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("TEST_POSTGRES_URL")
	if admin == "" {
		var err error
		if admin, err = sharedCluster(); err != nil {
			t.Fatalf("testkit: PostgreSQL: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("testkit: connect to PostgreSQL at %s: %v", redactURL(admin), err)
	}
	defer conn.Close(ctx)
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name := "test_" + hex.EncodeToString(suffix)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("testkit: create database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("testkit: drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testkit: drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("testkit: TEST_POSTGRES_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

var (
	clusterOnce sync.Once
	clusterURL  string
	clusterErr  error
)

// sharedCluster starts, once per test binary, a PostgreSQL cluster that dies with the binary.
func sharedCluster() (string, error) {
	clusterOnce.Do(func() { clusterURL, clusterErr = startCluster() })
	return clusterURL, clusterErr
}

const installPostgres = "install it with `apt-get install -y postgresql` (Debian) or set TEST_POSTGRES_URL"

func startCluster() (string, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return "", err
	}
	var cred *syscall.Credential
	owner := -1
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: run the cluster as the postgres user.
		u, err := user.Lookup("postgres")
		if err != nil {
			return "", fmt.Errorf("running as root needs a postgres user: %w; %s", err, installPostgres)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		cred, owner = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid
	}
	dir, err := os.MkdirTemp("", "meshmart-pg-")
	if err != nil {
		return "", err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return "", err
	}
	if owner >= 0 {
		for _, p := range []string{dir, data} {
			if err := os.Chown(p, owner, -1); err != nil {
				return "", err
			}
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return "", fmt.Errorf("initdb: %w\n%s", err, out)
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		return "", err
	}
	port := ports[0]
	pg := exec.Command(filepath.Join(bin, "postgres"), "-D", data, "-p", strconv.Itoa(port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=300")
	logs := &SyncBuffer{}
	pg.Stdout, pg.Stderr = logs, logs
	// Fast shutdown when the test binary dies, however it dies.
	pg.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT}
	exited, err := proc.Start(pg)
	if err != nil {
		return "", fmt.Errorf("start postgres: %w", err)
	}
	go func() { <-exited; _ = os.RemoveAll(dir) }()

	admin := fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, admin)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return admin, nil
		}
		select {
		case <-exited:
			return "", fmt.Errorf("postgres exited: %s", logs.String())
		default:
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("postgres not ready after 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// postgresBinDir finds the directory holding initdb and postgres.
func postgresBinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Dir(real), nil
		}
		return filepath.Dir(p), nil
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) > 0 {
		return filepath.Dir(matches[len(matches)-1]), nil
	}
	return "", fmt.Errorf("no initdb on PATH or in /usr/lib/postgresql: %s", installPostgres)
}

// Database names a kind of database and makes fresh ones.
type Database struct {
	Name string
	New  func(testing.TB) string
}

// Databases are the databases every store runs on: the embedded default and production's.
var Databases = []Database{{"sqlite", SQLitePath}, {"postgres", PostgresURL}}

// ForEachDatabase runs test as a parallel subtest on each of Databases.
func ForEachDatabase(t *testing.T, test func(t *testing.T, db Database)) {
	t.Helper()
	for _, db := range Databases {
		t.Run(db.Name, func(t *testing.T) {
			t.Parallel()
			test(t, db)
		})
	}
}
