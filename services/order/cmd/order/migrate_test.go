package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/sqldb"
)

// checkMigrateCommand runs the service binary bin's `migrate` subcommand (pkg/app's
// MigrateCommand) on the database at dsn as a Helm pre-install Job does, the URL in the file
// DATABASE_URL_FILE names: twice at once, then once more. Every run must exit 0; the first two
// must apply each migration exactly once between them, as schema_migrations records, and the
// third none.
func checkMigrateCommand(t testing.TB, bin, dsn string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "database-url")
	if err := os.WriteFile(file, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func() (applied []string, out string, err error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "migrate", "-log-format", "json", "-log-level", "info")
		cmd.Env = append(os.Environ(), "DATABASE_URL=", "DATABASE_URL_FILE="+file)
		b, err := cmd.CombinedOutput()
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			var line struct {
				Msg     string   `json:"msg"`
				Applied []string `json:"applied"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "migrated" {
				return line.Applied, string(b), err
			}
		}
		if err == nil {
			err = errors.New(`exited 0 without a "migrated" log line`)
		}
		return nil, string(b), err
	}

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		both []string
	)
	for range 2 {
		wg.Go(func() {
			applied, out, err := run()
			if err != nil {
				t.Errorf("%s migrate: %v\n%s", filepath.Base(bin), err, out)
			}
			mu.Lock()
			both = append(both, applied...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(both)
	if len(both) == 0 || len(slices.Compact(slices.Clone(both))) != len(both) {
		t.Errorf("two concurrent %s migrate runs applied %v between them, want every migration once", filepath.Base(bin), both)
	}
	if recorded := schemaMigrations(t, dsn); recorded != len(both) {
		t.Errorf("schema_migrations records %d migrations, the runs applied %d", recorded, len(both))
	}
	applied, out, err := run()
	if err != nil || len(applied) != 0 {
		t.Errorf("%s migrate on a migrated database applied %v (%v), want nothing\n%s", filepath.Base(bin), applied, err, out)
	}
	if t.Failed() {
		return
	}
	t.Logf("%s migrate: %s", filepath.Base(bin), strings.Join(both, ", "))
}

// schemaMigrations counts the migrations the database at dsn records.
func schemaMigrations(t testing.TB, dsn string) int {
	t.Helper()
	db, err := sqldb.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT count(*) FROM schema_migrations").Scan(&n); err != nil {
		t.Fatalf("read schema_migrations: %v", err)
	}
	return n
}
