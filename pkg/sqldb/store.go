// Package sqldb opens the SQL database a meshmart service keeps its state in, embedded SQLite by
// default and PostgreSQL in production, and applies the service's embedded migrations.
//
// Services write one set of queries with ? placeholders and portable types (TEXT, BIGINT,
// INTEGER); DB.Rebind turns the placeholders into PostgreSQL's $1, $2 when needed. DB.LogSeq and
// DB.Published keep an event log readable in order without a lock (see log.go), and
// UniqueViolation and Unavailable classify driver errors the same way on both databases. DB.Secret keeps random secrets (the page token
// key) in the database itself, and Store, opened by OpenStore, is the part every service's store
// embeds.
package sqldb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect is the SQL flavour of a database.
type Dialect int

const (
	// SQLite is the embedded default (modernc.org/sqlite, pure Go).
	SQLite Dialect = iota
	// Postgres is PostgreSQL, through pgx.
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// DB is an open database and its dialect. The embedded pool runs everything that writes; Read
// runs queries that write nothing.
type DB struct {
	*sql.DB
	// Read is the pool for queries that write nothing. On SQLite it is a pool of its own, of
	// read-only connections, so that reads never queue behind the one writer connection (WAL
	// lets readers run while a writer commits); on PostgreSQL it is the embedded pool itself.
	Read    *sql.DB
	Dialect Dialect
}

// Close closes the database's pools.
func (db *DB) Close() error {
	if db.Read != nil && db.Read != db.DB {
		return errors.Join(db.Read.Close(), db.DB.Close())
	}
	return db.DB.Close()
}

// Open opens and pings the database named by dsn: a postgres:// or postgresql:// URL opens
// PostgreSQL; anything else is a SQLite file path (an optional "sqlite:" or "file:" prefix is
// dropped), whose directory is created if missing; a new file is created readable and writable
// by its owner alone (0600).
//
// SQLite runs in WAL mode with a 5 s busy timeout, foreign keys on, and write transactions that
// take the write lock when they begin, so that several processes can share the file without
// deadlocking. It is durable by default, synchronous=FULL: a commit that returned survives a
// power cut. A path ending in "?synchronous=NORMAL" trades that for fewer fsyncs: in WAL mode a
// transaction committed just before a power cut or an operating system crash can then roll back
// (a crash of the process alone loses nothing); the database stays consistent either way.
func Open(ctx context.Context, dsn string, opts ...Option) (*DB, error) {
	var o options
	for _, opt := range opts {
		opt.apply(&o)
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		db, err := o.open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("store: open postgres database: %w", err)
		}
		db.SetMaxOpenConns(20)
		db.SetMaxIdleConns(20)
		db.SetConnMaxIdleTime(5 * time.Minute)
		if err := ping(ctx, db, Postgres); err != nil {
			db.Close()
			return nil, fmt.Errorf("store: connect to postgres database: %w", err)
		}
		return &DB{DB: db, Read: db, Dialect: Postgres}, nil
	}
	path, synchronous, err := sqlitePath(dsn)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	// The file holds password hashes, tokens' signing secrets and payments: readable by its
	// owner alone. SQLite would create it 0644 (under the umask); its -wal and -shm files take
	// the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	f.Close()
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "synchronous("+synchronous+")")
	q.Set("_txlock", "immediate")
	w, err := o.open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite database: %w", err)
	}
	// One writer connection per process: SQLite has one writer at a time anyway, and waiting in
	// Go's pool is far cheaper than SQLite's busy handler, which sleeps in steps of up to 100 ms.
	// Other processes sharing the file still wait in the busy handler.
	w.SetMaxOpenConns(1)
	if err := ping(ctx, w, SQLite); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: connect to sqlite database: %w", err)
	}
	// Readers open the file once the writer has made it WAL; query_only makes a write sent to
	// the wrong pool fail instead of taking the write lock behind the writer's back.
	q = url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "query_only(1)")
	r, err := o.open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open sqlite database: %w", err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	if err := ping(ctx, r, SQLite); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("store: connect to sqlite database: %w", err)
	}
	return &DB{DB: w, Read: r, Dialect: SQLite}, nil
}

// Option configures Open.
type Option interface{ apply(*options) }

type options struct {
	wrap func(driver.Driver) driver.Driver
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithDriver has every connection made through wrap(the driver), for a test that watches what a
// store sends (testkit.DBCounter). Without it the driver is used as it is.
func WithDriver(wrap func(driver.Driver) driver.Driver) Option {
	return optionFunc(func(o *options) { o.wrap = wrap })
}

// open opens a pool of the registered driver name, wrapped as the options say.
func (o options) open(name, dsn string) (*sql.DB, error) {
	db, err := sql.Open(name, dsn)
	if err != nil || o.wrap == nil {
		return db, err
	}
	d := db.Driver()
	db.Close() // it has made no connection yet
	return sql.OpenDB(connector{d: o.wrap(d), dsn: dsn}), nil
}

// connector makes connections to dsn with d.
type connector struct {
	d   driver.Driver
	dsn string
}

func (c connector) Connect(context.Context) (driver.Conn, error) { return c.d.Open(c.dsn) }
func (c connector) Driver() driver.Driver                        { return c.d }

// sqlitePath splits a SQLite dsn into the file's path and its synchronous setting: FULL unless
// the dsn ends in "?synchronous=NORMAL".
func sqlitePath(dsn string) (path, synchronous string, err error) {
	path = strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
	synchronous = "FULL"
	if i := strings.IndexByte(path, '?'); i >= 0 {
		q, err := url.ParseQuery(path[i+1:])
		if err != nil {
			return "", "", fmt.Errorf("store: sqlite options %q: %w", path[i+1:], err)
		}
		for k := range q {
			if k != "synchronous" {
				return "", "", fmt.Errorf("store: unknown sqlite option %q (only synchronous=FULL or NORMAL)", k)
			}
		}
		switch v := strings.ToUpper(q.Get("synchronous")); v {
		case "FULL", "NORMAL":
			synchronous = v
		default:
			return "", "", fmt.Errorf("store: sqlite synchronous=%q: want FULL or NORMAL", q.Get("synchronous"))
		}
		path = path[:i]
	}
	if path == "" {
		return "", "", errors.New("store: empty database path")
	}
	return path, synchronous, nil
}

// ping makes the first connection. Two processes opening a new SQLite file at the same moment
// (two replicas starting together) can find each other switching it to WAL: SQLite then answers
// SQLITE_BUSY at once, without its busy handler, since waiting could deadlock. The connection is
// simply made again, a bounded number of times; the pragmas run anew each time.
func ping(ctx context.Context, db *sql.DB, dialect Dialect) error {
	for attempt := 1; ; attempt++ {
		err := db.PingContext(ctx)
		var sqliteErr *sqlite.Error
		if err == nil || dialect != SQLite || !errors.As(err, &sqliteErr) || sqliteErr.Code()&0xff != sqlite3.SQLITE_BUSY || attempt == 100 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(10+attempt%7*5) * time.Millisecond):
		}
	}
}

// Describe renders dsn for a log line: a PostgreSQL URL without its password, or the SQLite path.
func Describe(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			return u.Redacted()
		}
		return "postgres (unparsable URL)"
	}
	return "sqlite:" + strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
}

// Rebind rewrites ? placeholders as $1, $2, ... for PostgreSQL; SQLite takes the query as is.
// Queries must not hold a literal '?'.
func (db *DB) Rebind(query string) string {
	if db.Dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// UniqueViolation reports whether err is a unique-constraint violation and, if so, names what was
// violated: the index or constraint name on PostgreSQL ("users_email_key"), "table.column" on
// SQLite ("users.email"). Callers match on the column name, which both contain.
func UniqueViolation(err error) (string, bool) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return pgErr.ConstraintName, true
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) && (sqliteErr.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || sqliteErr.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY) {
		msg := sqliteErr.Error()
		if i := strings.LastIndex(msg, "failed: "); i >= 0 {
			return strings.TrimSuffix(strings.TrimSpace(msg[i+len("failed: "):]), ")"), true
		}
		return msg, true
	}
	return "", false
}

// Unavailable reports whether err means the database could not be reached or is shutting down, as
// opposed to a problem with the query: such errors map to gRPC Unavailable.
func Unavailable(err error) bool {
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now.
		return strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	var sqliteErr *sqlite.Error
	if errors.As(err, &sqliteErr) {
		return sqliteErr.Code()&0xff == sqlite3.SQLITE_BUSY || sqliteErr.Code()&0xff == sqlite3.SQLITE_LOCKED
	}
	return false
}
