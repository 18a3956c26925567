// Package sqldb opens the SQL database a meshmart service keeps its state in, embedded SQLite by
// default and PostgreSQL in production, and applies the service's embedded migrations.
//
// Services write one set of queries with ? placeholders and portable types (TEXT, BIGINT,
// INTEGER); DB.Rebind turns the placeholders into PostgreSQL's $1, $2 when needed. OrderedTx
// makes an event log's sequence grow in commit order, and UniqueViolation and Unavailable classify
// driver errors the same way on both databases. DB.Secret keeps random secrets (the page token
// key) in the database itself, and Store, opened by OpenStore, is the part every service's store
// embeds.
package sqldb

import (
	"context"
	"database/sql"
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

// DB is an open database and its dialect.
type DB struct {
	*sql.DB
	Dialect Dialect
}

// Open opens and pings the database named by dsn: a postgres:// or postgresql:// URL opens
// PostgreSQL; anything else is a SQLite file path (an optional "sqlite:" or "file:" prefix is
// dropped), whose directory is created if missing; a new file is created readable and writable
// by its owner alone (0600). SQLite runs in WAL mode with a 5 s busy timeout, foreign keys on, and write
// transactions that take the write lock when they begin, so that several processes can share the
// file without deadlocking.
func Open(ctx context.Context, dsn string) (*DB, error) {
	var (
		db      *sql.DB
		dialect Dialect
		err     error
	)
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		dialect = Postgres
		db, err = sql.Open("pgx", dsn)
		if err == nil {
			db.SetMaxOpenConns(20)
			db.SetMaxIdleConns(20)
			db.SetConnMaxIdleTime(5 * time.Minute)
		}
	} else {
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "file:")
		if path == "" {
			return nil, errors.New("store: empty database path")
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		// The file holds password hashes, tokens' signing secrets and payments: readable by its
		// owner alone. SQLite would create it 0644 (under the umask); its -wal and -shm files
		// take the database file's mode.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		f.Close()
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(5000)")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "foreign_keys(1)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Set("_txlock", "immediate")
		db, err = sql.Open("sqlite", "file:"+path+"?"+q.Encode())
		if err == nil {
			// One connection per process: SQLite has one writer at a time anyway, and waiting in
			// Go's pool is far cheaper than SQLite's busy handler, which sleeps in steps of up to
			// 100 ms. Other processes sharing the file still wait in the busy handler.
			db.SetMaxOpenConns(1)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s database: %w", dialect, err)
	}
	if err := ping(ctx, db, dialect); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: connect to %s database: %w", dialect, err)
	}
	return &DB{DB: db, Dialect: dialect}, nil
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
