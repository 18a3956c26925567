package app_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/pkg/testkit"
)

var schema = fstest.MapFS{
	"0001_things.sql":           {Data: []byte("CREATE TABLE things (id TEXT PRIMARY KEY)")},
	"0002_counter.sqlite.sql":   {Data: []byte("CREATE TABLE counters (n INTEGER NOT NULL)")},
	"0002_counter.postgres.sql": {Data: []byte("CREATE TABLE counters (n BIGINT NOT NULL)")},
}

// dbSettings are a service's own settings with a database, as the real services have them.
type dbSettings struct {
	Database string `flag:"database" env:"DATABASE_URL" usage:"SQLite file path or postgres:// URL" secret:"true"`
}

// migratingService is a service with a database and Migrate; what each run applied is recorded.
type migratingService struct {
	mu      sync.Mutex
	applied [][]string
}

func (m *migratingService) service(t *testing.T) app.Service {
	c := &dbSettings{}
	return app.Service{Name: "example", GRPCAddr: "127.0.0.1:0", Settings: c,
		Start: func(context.Context, *app.Setup) error {
			t.Error("migrate started the service")
			return nil
		},
		Migrate: func(ctx context.Context) ([]string, error) {
			applied, err := sqldb.MigrateDatabase(ctx, c.Database, schema)
			m.mu.Lock()
			m.applied = append(m.applied, applied)
			m.mu.Unlock()
			return applied, err
		}}
}

// TestMigrateCommand runs `<service> migrate` on SQLite and PostgreSQL: two runs at once apply
// each migration exactly once between them, a later run applies nothing, the database is named
// by the flag, the variable or the file DATABASE_URL_FILE names, and no server starts.
func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) {
		dsn := db.New(t)
		m := &migratingService{}
		args := []string{app.MigrateCommand, "-log-level", "warn", "-database", dsn}
		var wg sync.WaitGroup
		for range 2 {
			wg.Go(func() {
				if err := app.Run(t.Context(), m.service(t), args, noEnv); err != nil {
					t.Errorf("migrate: %v", err)
				}
			})
		}
		wg.Wait()
		all := slices.Concat(m.applied...)
		slices.Sort(all)
		if want := []string{"0001_things.sql", "0002_counter." + db.Name + ".sql"}; !slices.Equal(all, want) {
			t.Errorf("two concurrent runs applied %v between them, want %v", all, want)
		}

		file := filepath.Join(t.TempDir(), "database-url")
		if err := os.WriteFile(file, []byte(dsn+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, env := range []map[string]string{{"DATABASE_URL": dsn}, {"DATABASE_URL_FILE": file}} {
			m := &migratingService{}
			if err := app.Run(t.Context(), m.service(t), []string{app.MigrateCommand, "-log-level", "warn"}, envOf(env)); err != nil {
				t.Errorf("migrate with %v: %v", env, err)
			}
			if len(m.applied) != 1 || len(m.applied[0]) != 0 {
				t.Errorf("migrate on a migrated database with %v applied %v, want nothing", env, m.applied)
			}
		}
	})
}

// TestMigrateCommandFails: a migration that fails makes the subcommand fail, naming it, and a
// service without Migrate has no such subcommand (the word is then an unknown argument).
func TestMigrateCommandFails(t *testing.T) {
	t.Parallel()
	dsn := testkit.SQLitePath(t)
	svc := (&migratingService{}).service(t)
	svc.Migrate = func(ctx context.Context) ([]string, error) {
		return sqldb.MigrateDatabase(ctx, dsn, fstest.MapFS{"0001_broken.sql": {Data: []byte("CREATE TABLE (")}})
	}
	if err := app.Run(t.Context(), svc, []string{app.MigrateCommand, "-log-level", "warn"}, noEnv); err == nil || !strings.Contains(err.Error(), "0001_broken.sql") {
		t.Errorf("migrate with a broken migration = %v, want an error naming it", err)
	}
	svc.Migrate = nil
	svc.Start = func(context.Context, *app.Setup) error { t.Error("the service started"); return nil }
	if err := app.Run(t.Context(), svc, []string{app.MigrateCommand}, noEnv); err == nil || !strings.Contains(err.Error(), `"migrate"`) {
		t.Errorf("migrate to a service without Migrate = %v, want an error naming the argument", err)
	}
}
