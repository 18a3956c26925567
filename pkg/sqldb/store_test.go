package sqldb_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/pkg/testkit"
)

// databases runs test on a fresh SQLite file and a fresh PostgreSQL database.
func databases(t *testing.T, test func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { t.Parallel(); test(t, testkit.SQLitePath(t)) })
	t.Run("postgres", func(t *testing.T) { t.Parallel(); test(t, testkit.PostgresURL(t)) })
}

func open(t *testing.T, dsn string) *sqldb.DB {
	t.Helper()
	db, err := sqldb.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

var migrations = fstest.MapFS{
	"0001_things.sql":           {Data: []byte("CREATE TABLE things (id TEXT PRIMARY KEY, name TEXT NOT NULL)")},
	"0002_unique.sql":           {Data: []byte("CREATE UNIQUE INDEX things_name_key ON things (name)")},
	"0003_counter.sqlite.sql":   {Data: []byte("CREATE TABLE counters (n INTEGER NOT NULL)")},
	"0003_counter.postgres.sql": {Data: []byte("CREATE TABLE counters (n BIGINT NOT NULL)")},
}

func TestMigrateOnceAcrossReplicas(t *testing.T) {
	t.Parallel()
	databases(t, func(t *testing.T, dsn string) {
		// Four replicas start at once, each with its own pool.
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			db := open(t, dsn)
			wg.Go(func() { errs <- sqldb.Migrate(context.Background(), db, migrations) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("Migrate: %v", err)
			}
		}
		db := open(t, dsn)
		if err := sqldb.Migrate(context.Background(), db, migrations); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
		var n int
		if err := db.QueryRow("SELECT count(*) FROM schema_migrations").Scan(&n); err != nil || n != 3 {
			t.Fatalf("schema_migrations has %d rows (%v), want 3", n, err)
		}
		// The unique index exists and is reported as such.
		if _, err := db.Exec(db.Rebind("INSERT INTO things (id, name) VALUES (?, ?)"), "1", "a"); err != nil {
			t.Fatal(err)
		}
		_, err := db.Exec(db.Rebind("INSERT INTO things (id, name) VALUES (?, ?)"), "2", "a")
		if what, ok := sqldb.UniqueViolation(err); !ok || !strings.Contains(what, "name") {
			t.Errorf("duplicate name: UniqueViolation(%v) = %q, %v", err, what, ok)
		}
		_, err = db.Exec(db.Rebind("INSERT INTO things (id, name) VALUES (?, ?)"), "1", "b")
		if _, ok := sqldb.UniqueViolation(err); !ok {
			t.Errorf("duplicate id: %v is not a unique violation", err)
		}
	})
}

func TestFailedMigrationLeavesNothing(t *testing.T) {
	t.Parallel()
	databases(t, func(t *testing.T, dsn string) {
		db := open(t, dsn)
		bad := fstest.MapFS{
			"0001_ok.sql":     {Data: []byte("CREATE TABLE ok (id TEXT PRIMARY KEY)")},
			"0002_broken.sql": {Data: []byte("CREATE TABLE broken (id TEXT PRIMARY KEY, oops)))")},
		}
		if err := sqldb.Migrate(context.Background(), db, bad); err == nil {
			t.Fatal("a broken migration applied")
		}
		var n int
		err := db.QueryRow("SELECT count(*) FROM ok").Scan(&n)
		if err == nil {
			t.Errorf("the migration before the broken one was left applied")
		}
	})
}

func TestRebind(t *testing.T) {
	t.Parallel()
	pg := &sqldb.DB{Dialect: sqldb.Postgres}
	if got := pg.Rebind("SELECT a FROM t WHERE b = ? AND c = ?"); got != "SELECT a FROM t WHERE b = $1 AND c = $2" {
		t.Errorf("Rebind = %q", got)
	}
	lite := &sqldb.DB{Dialect: sqldb.SQLite}
	if got := lite.Rebind("x = ?"); got != "x = ?" {
		t.Errorf("SQLite Rebind = %q", got)
	}
}

// TestReplicasOpenANewSQLiteFileTogether opens one new SQLite file from several connections at
// once, as replicas starting together do: each must get through the switch to WAL.
func TestReplicasOpenANewSQLiteFileTogether(t *testing.T) {
	t.Parallel()
	for range 20 {
		path := testkit.SQLitePath(t)
		var wg sync.WaitGroup
		errs := make(chan error, 4)
		for range 4 {
			wg.Go(func() {
				db, err := sqldb.Open(context.Background(), path)
				if err != nil {
					errs <- err
					return
				}
				errs <- db.PingContext(context.Background())
				db.Close()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestSecretSharedAcrossReplicas(t *testing.T) {
	t.Parallel()
	databases(t, func(t *testing.T, dsn string) {
		// Four replicas ask at once, each with its own pool: all get the same secret.
		var wg sync.WaitGroup
		got := make([][]byte, 4)
		errs := make([]error, 4)
		for i := range 4 {
			db := open(t, dsn)
			wg.Go(func() { got[i], errs[i] = db.Secret(context.Background(), "page_token", 32) })
		}
		wg.Wait()
		for i := range 4 {
			if errs[i] != nil {
				t.Fatalf("Secret: %v", errs[i])
			}
			if len(got[i]) != 32 || !bytes.Equal(got[i], got[0]) {
				t.Fatalf("replica %d got %x, replica 0 %x", i, got[i], got[0])
			}
		}
		db := open(t, dsn)
		again, err := db.Secret(context.Background(), "page_token", 32)
		if err != nil || !bytes.Equal(again, got[0]) {
			t.Errorf("Secret again = %x, %v; want %x", again, err, got[0])
		}
		other, err := db.Secret(context.Background(), "other", 32)
		if err != nil || bytes.Equal(other, got[0]) {
			t.Errorf("another name = %x, %v; want a secret of its own", other, err)
		}
		if _, err := db.Secret(context.Background(), "page_token", 16); err == nil {
			t.Error("Secret with another size succeeded")
		}
	})
}

// A SQLite file, and the -wal and -shm files beside it, are readable by their owner alone: they
// hold password hashes and secrets.
func TestSQLiteFilesAreOwnerOnly(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "data", "x.sqlite")
	s, err := sqldb.OpenStore(context.Background(), path, migrations)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.DB.ExecContext(context.Background(), "INSERT INTO things (id, name) VALUES ('1', 'one')"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group and others", filepath.Base(p), perm)
		}
	}
}

// TestMigrateUnderRepeatableRead: on a PostgreSQL database whose default isolation is REPEATABLE
// READ, concurrent runs still apply each migration once: the migration transaction reads what the
// run that held the lock before it committed.
func TestMigrateUnderRepeatableRead(t *testing.T) {
	t.Parallel()
	dsn := testkit.PostgresURL(t)
	db := open(t, dsn)
	var name string
	if err := db.QueryRow("SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("ALTER DATABASE " + name + " SET default_transaction_isolation = 'repeatable read'"); err != nil {
		t.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		runs [][]string
	)
	for range 4 {
		wg.Go(func() {
			applied, err := sqldb.MigrateDatabase(context.Background(), dsn, migrations)
			if err != nil {
				t.Errorf("MigrateDatabase: %v", err)
			}
			mu.Lock()
			runs = append(runs, applied)
			mu.Unlock()
		})
	}
	wg.Wait()
	var total int
	for _, r := range runs {
		total += len(r)
	}
	if total != 3 {
		t.Errorf("four concurrent runs applied %v, want the three migrations once between them", runs)
	}
}

// TestSQLiteDurableByDefault: SQLite commits with synchronous=FULL unless the path asks for
// NORMAL; anything else is refused.
func TestSQLiteDurableByDefault(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		suffix string
		want   int // PRAGMA synchronous: 1 NORMAL, 2 FULL
	}{{"", 2}, {"?synchronous=FULL", 2}, {"?synchronous=NORMAL", 1}, {"?synchronous=normal", 1}} {
		db := open(t, testkit.SQLitePath(t)+c.suffix)
		var got int
		if err := db.QueryRow("PRAGMA synchronous").Scan(&got); err != nil || got != c.want {
			t.Errorf("%q: PRAGMA synchronous = %d, %v; want %d", c.suffix, got, err, c.want)
		}
	}
	for _, bad := range []string{"?synchronous=OFF", "?journal_mode=MEMORY"} {
		if db, err := sqldb.Open(context.Background(), testkit.SQLitePath(t)+bad); err == nil {
			db.Close()
			t.Errorf("%q was accepted", bad)
		}
	}
}

// TestSQLiteReadsDoNotQueueBehindTheWriter holds a write transaction open on the one writer
// connection: a read on DB.Read still answers, from the last commit, and a write sent to DB.Read
// is refused rather than taking the write lock.
func TestSQLiteReadsDoNotQueueBehindTheWriter(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t, testkit.SQLitePath(t))
	if _, err := db.Exec("CREATE TABLE things (n INTEGER NOT NULL); INSERT INTO things VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.Exec("INSERT INTO things VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int
	if err := db.Read.QueryRowContext(rctx, "SELECT COUNT(*) FROM things").Scan(&n); err != nil || n != 1 {
		t.Fatalf("a read while the writer holds a transaction = %d, %v; want 1 at once", n, err)
	}
	if _, err := db.Read.ExecContext(rctx, "INSERT INTO things VALUES (3)"); err == nil {
		t.Fatal("a write on the read pool succeeded")
	}
}
