package sqldb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Migrate applies the migrations in fsys that db has not applied yet, in version order. A
// migration is a file NNNN_name.sql, or NNNN_name.sqlite.sql and NNNN_name.postgres.sql where the
// dialects need different SQL; NNNN is its version. Applied versions are recorded in
// schema_migrations.
//
// All of it runs in one transaction that first takes a database-wide lock (an advisory lock on
// PostgreSQL, the write lock on SQLite), so replicas starting together apply each migration
// exactly once and a failed migration leaves nothing half-applied. goose and golang-migrate
// both lack that lock on SQLite, which is why this small migrator exists.
func Migrate(ctx context.Context, db *DB, fsys fs.FS) error {
	_, err := migrate(ctx, db, fsys)
	return err
}

// MigrateDatabase opens the database at dsn (see Open), applies the migrations in fsys as
// Migrate does, closes it and returns the names of the migrations it applied: none when the
// schema was up to date. It is what a service's `migrate` subcommand runs.
func MigrateDatabase(ctx context.Context, dsn string, fsys fs.FS) (applied []string, err error) {
	db, err := Open(ctx, dsn)
	if err != nil {
		return nil, err
	}
	applied, err = migrate(ctx, db, fsys)
	return applied, errors.Join(err, db.Close())
}

// migrate is Migrate, returning the names of the migrations it applied.
func migrate(ctx context.Context, db *DB, fsys fs.FS) ([]string, error) {
	migrations, err := load(fsys, db.Dialect)
	if err != nil {
		return nil, err
	}
	// SQLite: BEGIN IMMEDIATE, the write lock (see Open). PostgreSQL: READ COMMITTED whatever the
	// server's default_transaction_isolation says, so that each statement after the lock sees
	// what the run that held it before committed; under REPEATABLE READ the snapshot would be
	// taken by the lock statement itself, before the wait, and a second run would apply every
	// migration again.
	var opts *sql.TxOptions
	if db.Dialect == Postgres {
		opts = &sql.TxOptions{Isolation: sql.LevelReadCommitted}
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback()
	if db.Dialect == Postgres {
		// Any constant works; this one spells "meshmart" in ASCII.
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7882464627958653556)"); err != nil {
			return nil, fmt.Errorf("migrate: lock: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`); err != nil {
		return nil, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	done := map[int64]bool{}
	rows, err := tx.QueryContext(ctx, "SELECT version FROM schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		done[v] = true
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	var applied []string
	for _, m := range migrations {
		if done[m.version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("migrate: %s: %w", m.name, err)
		}
		if _, err := tx.ExecContext(ctx, db.Rebind("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
			m.version, m.name, time.Now().UnixMicro()); err != nil {
			return nil, fmt.Errorf("migrate: record %s: %w", m.name, err)
		}
		applied = append(applied, m.name)
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("migrate: commit: %w", err)
	}
	return applied, nil
}

type migration struct {
	version int64
	name    string
	sql     string
}

func load(fsys fs.FS, dialect Dialect) ([]migration, error) {
	files, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	byVersion := map[int64]migration{}
	for _, f := range files {
		base := strings.TrimSuffix(path.Base(f), ".sql")
		if d := path.Ext(base); d == ".sqlite" || d == ".postgres" {
			if d[1:] != dialect.String() {
				continue
			}
			base = strings.TrimSuffix(base, d)
		}
		num, _, ok := strings.Cut(base, "_")
		version, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("migrate: %s is not named NNNN_name.sql", f)
		}
		if prev, dup := byVersion[version]; dup {
			return nil, fmt.Errorf("migrate: %s and %s share version %d", prev.name, f, version)
		}
		data, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		byVersion[version] = migration{version: version, name: f, sql: string(data)}
	}
	out := make([]migration, 0, len(byVersion))
	for _, m := range byVersion {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b migration) int { return int(a.version - b.version) })
	return out, nil
}

// OpenMigrated opens the database at dsn (see Open) and applies the migrations in fsys.
func OpenMigrated(ctx context.Context, dsn string, fsys fs.FS, opts ...Option) (*DB, error) {
	db, err := Open(ctx, dsn, opts...)
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, db, fsys); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Micros stores a time as unix microseconds, the zero time as 0; FromMicros reverses it. Both
// databases keep times this way, so one schema and one set of queries serve both.
func Micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// FromMicros returns the UTC time n unix microseconds stand for; 0 is the zero time.
func FromMicros(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.UnixMicro(n).UTC()
}

// InTx runs fn in a transaction, committing when it returns nil and rolling back otherwise.
func InTx(ctx context.Context, db *DB, fn func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}
