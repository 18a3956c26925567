package testkit

import (
	"context"
	"crypto/rand"
	"database/sql/driver"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meshmart/meshmart/pkg/proc"
	"github.com/meshmart/meshmart/pkg/sqldb"
)

// SQLitePath returns the path of a fresh SQLite database file in a temporary directory, removed
// when the test ends.
func SQLitePath(t testing.TB) string {
	t.Helper()
	return filepath.Join(t.TempDir(), "test.sqlite")
}

// OpenSQLite opens a service's store with open on a fresh SQLite file (SQLitePath), failing the
// test if it cannot, and closes it when the test ends: OpenSQLite(t, store.Open).
func OpenSQLite[S interface{ Close() error }](t testing.TB, open func(ctx context.Context, dsn string) (S, error)) S {
	t.Helper()
	s, err := open(context.Background(), SQLitePath(t))
	if err != nil {
		t.Fatalf("testkit: open a store on SQLite: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
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
	return createDatabase(t, admin)
}

// createDatabase creates a database through the admin URL and drops it when the test ends.
func createDatabase(t testing.TB, admin string) string {
	t.Helper()
	dsn, name, err := newDatabase(admin)
	if err != nil {
		t.Fatalf("testkit: %v", err)
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
	return dsn
}

// newDatabase creates a database with a random name through the admin URL and returns its URL
// and name.
func newDatabase(admin string) (dsn, name string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := url.Parse(admin)
	if err != nil {
		return "", "", fmt.Errorf("PostgreSQL URL: %w", err)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", "", fmt.Errorf("connect to PostgreSQL at %s: %w", redactURL(admin), err)
	}
	defer conn.Close(ctx)
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	name = "test_" + hex.EncodeToString(suffix)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", "", fmt.Errorf("create database: %w", err)
	}
	u.Path = "/" + name
	return u.String(), name, nil
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
	clusterOnce.Do(func() {
		var pg *Postgres
		if pg, clusterErr = newPostgres(); clusterErr == nil {
			clusterURL = pg.Admin
		}
	})
	return clusterURL, clusterErr
}

const installPostgres = "install it with `apt-get install -y postgresql` (Debian) or set TEST_POSTGRES_URL"

// Postgres is a throw-away PostgreSQL cluster that a test may stop and start again, to prove
// what survives a database outage. It listens on loopback and dies with the test binary.
type Postgres struct {
	// Admin is the superuser's URL of the postgres database.
	Admin string

	bin, dir, data string
	port           int
	cred           *syscall.Credential
	logs           *SyncBuffer
	cmd            *exec.Cmd
	exited         <-chan struct{}
}

// StartPostgres starts a cluster of the test's own, removed when the test ends.
func StartPostgres(t testing.TB) *Postgres {
	t.Helper()
	pg, err := newPostgres()
	if err != nil {
		t.Fatalf("testkit: PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		pg.Stop()
		_ = os.RemoveAll(pg.dir)
	})
	return pg
}

// Database creates a fresh database on the cluster, dropped when the test ends, and returns its URL.
func (pg *Postgres) Database(t testing.TB) string {
	t.Helper()
	return createDatabase(t, pg.Admin)
}

// LaunchPostgres starts a cluster outside any test, for a platform a package's tests share (see
// loadkit.Launch); the caller stops it with Stop and removes it with Remove.
func LaunchPostgres() (*Postgres, error) { return newPostgres() }

// CreateDatabase creates a fresh database on the cluster outside any test and returns its URL; it
// goes with the cluster.
func (pg *Postgres) CreateDatabase() (string, error) {
	dsn, _, err := newDatabase(pg.Admin)
	return dsn, err
}

// Remove deletes the cluster's files; call it after Stop.
func (pg *Postgres) Remove() { _ = os.RemoveAll(pg.dir) }

// Logs returns what the server printed.
func (pg *Postgres) Logs() string { return pg.logs.String() }

func newPostgres() (*Postgres, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	pg := &Postgres{bin: bin, logs: &SyncBuffer{}}
	owner := -1
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: run the cluster as the postgres user.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a postgres user: %w; %s", err, installPostgres)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		pg.cred, owner = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid
	}
	if pg.dir, err = os.MkdirTemp("", "meshmart-pg-"); err != nil {
		return nil, err
	}
	pg.data = filepath.Join(pg.dir, "data")
	if err := os.Mkdir(pg.data, 0o700); err != nil {
		return nil, err
	}
	if owner >= 0 {
		for _, p := range []string{pg.dir, pg.data} {
			if err := os.Chown(p, owner, -1); err != nil {
				return nil, err
			}
		}
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", pg.data, "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	ports, err := proc.FreePorts(1)
	if err != nil {
		return nil, err
	}
	pg.port = ports[0]
	pg.Admin = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
	return pg, pg.Start()
}

// Start starts the server (again, after Stop) on the same port and data, and returns once it
// accepts connections. The server runs with PostgreSQL's durable defaults (fsync,
// synchronous_commit and full_page_writes on), as a user runs it: the benchmarks measure commits
// that survive a power cut. (initdb's --no-sync above only skips flushing the new cluster's
// files once, at creation.)
func (pg *Postgres) Start() error {
	cmd := exec.Command(filepath.Join(pg.bin, "postgres"), "-D", pg.data, "-p", strconv.Itoa(pg.port), "-k", pg.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300")
	cmd.Stdout, cmd.Stderr = pg.logs, pg.logs
	// Fast shutdown when the test binary dies, however it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred, Pdeathsig: syscall.SIGINT}
	exited, err := proc.Start(cmd)
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	pg.cmd, pg.exited = cmd, exited
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		conn, err := pgx.Connect(ctx, pg.Admin)
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("postgres exited: %s", pg.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres not ready after 30s: %v\n%s", err, pg.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop shuts the server down fast (SIGINT: open transactions are rolled back, clients are
// disconnected) and waits for it to exit.
func (pg *Postgres) Stop() {
	if pg.cmd == nil {
		return
	}
	_ = pg.cmd.Process.Signal(syscall.SIGINT)
	<-pg.exited
	pg.cmd = nil
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

// DBCounter counts what a database pool sends to its server, for tests that hold a use case to a
// budget of round trips and commits: wrap the pool's driver with Wrap (sqldb.WithDriver). A round
// trip is one Exec or Query, or a BEGIN, COMMIT or ROLLBACK; a commit is a COMMIT, or a write
// statement (INSERT, UPDATE, DELETE, or a WITH that holds one) run outside a transaction, which
// commits on its own. Statements run through a prepared statement are not counted: neither
// driver meshmart uses needs one.
type DBCounter struct {
	trips, commits atomic.Int64
}

// Counts returns the round trips and commits counted since the last Reset.
func (c *DBCounter) Counts() (roundTrips, commits int64) { return c.trips.Load(), c.commits.Load() }

// Reset starts the counts over.
func (c *DBCounter) Reset() { c.trips.Store(0); c.commits.Store(0) }

// Wrap returns d counting into c.
func (c *DBCounter) Wrap(d driver.Driver) driver.Driver { return countingDriver{d: d, c: c} }

// writes reports whether query writes: a statement that commits on its own outside a transaction.
func writes(query string) bool {
	words := strings.Fields(strings.ToUpper(query))
	if len(words) == 0 {
		return false
	}
	switch words[0] {
	case "INSERT", "UPDATE", "DELETE":
		return true
	case "WITH":
		return slices.ContainsFunc(words, func(w string) bool { return w == "INSERT" || w == "UPDATE" || w == "DELETE" })
	}
	return false
}

type countingDriver struct {
	d driver.Driver
	c *DBCounter
}

func (d countingDriver) Open(name string) (driver.Conn, error) {
	conn, err := d.d.Open(name)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: conn, c: d.c}, nil
}

type countingConn struct {
	driver.Conn
	c    *DBCounter
	inTx bool
}

func (cc *countingConn) statement(query string) {
	cc.c.trips.Add(1)
	if !cc.inTx && writes(query) {
		cc.c.commits.Add(1)
	}
}

func (cc *countingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	e, ok := cc.Conn.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	cc.statement(query)
	return e.ExecContext(ctx, query, args)
}

func (cc *countingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	q, ok := cc.Conn.(driver.QueryerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	cc.statement(query)
	return q.QueryContext(ctx, query, args)
}

func (cc *countingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	if p, ok := cc.Conn.(driver.ConnPrepareContext); ok {
		return p.PrepareContext(ctx, query)
	}
	return cc.Conn.Prepare(query)
}

func (cc *countingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	var (
		tx  driver.Tx
		err error
	)
	if b, ok := cc.Conn.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(ctx, opts)
	} else {
		tx, err = cc.Conn.Begin() //nolint:staticcheck // the fallback database/sql itself uses
	}
	cc.c.trips.Add(1)
	if err != nil {
		return nil, err
	}
	cc.inTx = true
	return &countingTx{Tx: tx, cc: cc}, nil
}

func (cc *countingConn) Ping(ctx context.Context) error {
	if p, ok := cc.Conn.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (cc *countingConn) ResetSession(ctx context.Context) error {
	if r, ok := cc.Conn.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (cc *countingConn) IsValid() bool {
	if v, ok := cc.Conn.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

func (cc *countingConn) CheckNamedValue(nv *driver.NamedValue) error {
	if c, ok := cc.Conn.(driver.NamedValueChecker); ok {
		return c.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

type countingTx struct {
	driver.Tx
	cc *countingConn
}

func (t *countingTx) Commit() error {
	t.cc.inTx = false
	t.cc.c.trips.Add(1)
	t.cc.c.commits.Add(1)
	return t.Tx.Commit()
}

func (t *countingTx) Rollback() error {
	t.cc.inTx = false
	t.cc.c.trips.Add(1)
	return t.Tx.Rollback()
}

// OpenCounted opens a service's store on dsn with the migrations in fsys, as its Open does, its
// driver counted by the returned DBCounter, and closes it when the test ends.
func OpenCounted(t testing.TB, dsn string, fsys fs.FS) (sqldb.Store, *DBCounter) {
	t.Helper()
	var c DBCounter
	st, err := sqldb.OpenStore(context.Background(), dsn, fsys, sqldb.WithDriver(c.Wrap))
	if err != nil {
		t.Fatalf("testkit: open a counted store: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	return st, &c
}
