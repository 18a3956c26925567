// Package store keeps the user service's accounts in SQL: SQLite or PostgreSQL, through one set
// of queries. It implements user.Store.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/services/user/internal/user"
	"github.com/meshmart/meshmart/services/user/migrations"
)

// Users is the SQL account store.
type Users struct{ sqldb.Store }

var _ user.Store = (*Users)(nil)

// Open opens the database at dsn (see sqldb.Open), applies the migrations and returns the store.
func Open(ctx context.Context, dsn string) (*Users, error) {
	st, err := sqldb.OpenStore(ctx, dsn, migrations.FS)
	if err != nil {
		return nil, err
	}
	return &Users{Store: st}, nil
}

// Ping checks the database is reachable.
func (s *Users) Ping(ctx context.Context) error { return s.DB.PingContext(ctx) }

const columns = "id, email, username, given_name, family_name, password_hash, status, roles, version, create_time, update_time, delete_time"

// execer is what Create needs of a *sql.DB or *sql.Tx.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func (s *Users) insert(ctx context.Context, e execer, u user.User) error {
	_, err := e.ExecContext(ctx, s.DB.Rebind("INSERT INTO users ("+columns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"),
		u.ID, u.Email, u.Username, u.GivenName, u.FamilyName, u.PasswordHash, int(u.Status),
		strings.Join(u.Roles, ","), u.Version, sqldb.Micros(u.CreateTime), sqldb.Micros(u.UpdateTime), sqldb.Micros(u.DeleteTime))
	return conflict(err)
}

// Create implements user.Store.
func (s *Users) Create(ctx context.Context, u user.User) error {
	if err := s.insert(ctx, s.DB, u); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	return nil
}

// CreateBatch implements user.Store: one transaction, one savepoint per account, so a failed
// insert is undone alone and the batch costs one commit.
func (s *Users) CreateBatch(ctx context.Context, us []user.User) []error {
	errs := make([]error, len(us))
	if len(us) == 0 {
		return errs
	}
	err := sqldb.InTx(ctx, s.DB, func(tx *sql.Tx) error {
		for i, u := range us {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT item"); err != nil {
				return err
			}
			if err := s.insert(ctx, tx, u); err != nil {
				errs[i] = err
				if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT item"); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT item"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Nothing was committed: every item failed.
		for i := range errs {
			errs[i] = fmt.Errorf("create users: %w", err)
		}
	}
	return errs
}

// Get implements user.Store.
func (s *Users) Get(ctx context.Context, l user.Lookup) (user.User, error) {
	var where, arg string
	switch {
	case l.ID != "":
		where, arg = "id", l.ID
	case l.Email != "":
		where, arg = "email", l.Email
	case l.Username != "":
		where, arg = "username", l.Username
	default:
		return user.User{}, user.ErrNotFound
	}
	row := s.DB.QueryRowContext(ctx, s.DB.Rebind("SELECT "+columns+" FROM users WHERE "+where+" = ?"), arg)
	u, err := scan(row)
	if errors.Is(err, sql.ErrNoRows) {
		return user.User{}, user.ErrNotFound
	}
	if err != nil {
		return user.User{}, fmt.Errorf("get user by %s: %w", where, err)
	}
	return u, nil
}

// Update implements user.Store.
func (s *Users) Update(ctx context.Context, u user.User) error { return s.update(ctx, s.DB, u) }

func (s *Users) update(ctx context.Context, e execer, u user.User) error {
	res, err := e.ExecContext(ctx, s.DB.Rebind(`UPDATE users SET email = ?, username = ?, given_name = ?, family_name = ?,
		password_hash = ?, status = ?, roles = ?, version = ?, update_time = ?, delete_time = ?
		WHERE id = ? AND version = ?`),
		u.Email, u.Username, u.GivenName, u.FamilyName, u.PasswordHash, int(u.Status), strings.Join(u.Roles, ","),
		u.Version, sqldb.Micros(u.UpdateTime), sqldb.Micros(u.DeleteTime), u.ID, u.Version-1)
	if err != nil {
		return fmt.Errorf("update user %s: %w", u.ID, conflict(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("update user %s: %w", u.ID, err)
	}
	if n == 0 {
		return user.ErrStale
	}
	return nil
}

// List implements user.Store.
func (s *Users) List(ctx context.Context, f user.Filter, after *paging.Cursor, limit int) ([]user.User, error) {
	q := "SELECT " + columns + " FROM users WHERE "
	var args []any
	if f.Status == user.StatusUnspecified {
		q += "status <> ?"
		args = append(args, int(user.StatusDeleted))
	} else {
		q += "status = ?"
		args = append(args, int(f.Status))
	}
	if after != nil {
		q += " AND (create_time, id) > (?, ?)"
		args = append(args, sqldb.Micros(after.CreateTime), after.ID)
	}
	q += " ORDER BY create_time, id LIMIT ?"
	args = append(args, limit)
	rows, err := s.DB.QueryContext(ctx, s.DB.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []user.User
	for rows.Next() {
		u, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

type scanner interface{ Scan(dest ...any) error }

func scan(r scanner) (user.User, error) {
	var (
		u                         user.User
		status                    int
		roles                     string
		created, updated, deleted int64
	)
	err := r.Scan(&u.ID, &u.Email, &u.Username, &u.GivenName, &u.FamilyName, &u.PasswordHash, &status, &roles,
		&u.Version, &created, &updated, &deleted)
	if err != nil {
		return user.User{}, err
	}
	u.Status = user.Status(status)
	if roles != "" {
		u.Roles = strings.Split(roles, ",")
	}
	u.CreateTime, u.UpdateTime, u.DeleteTime = sqldb.FromMicros(created), sqldb.FromMicros(updated), sqldb.FromMicros(deleted)
	return u, nil
}

// conflict turns a unique violation into the sentinel naming the taken field.
func conflict(err error) error {
	what, ok := sqldb.UniqueViolation(err)
	if !ok {
		return err
	}
	switch {
	case strings.Contains(what, "email"):
		return user.ErrEmailTaken
	case strings.Contains(what, "username"):
		return user.ErrUsernameTaken
	}
	return user.ErrIDTaken
}

// LoginFailures implements user.Store.
func (s *Users) LoginFailures(ctx context.Context, key string) (user.Failures, error) {
	var (
		f    user.Failures
		last int64
	)
	err := s.DB.QueryRowContext(ctx, s.DB.Rebind("SELECT failures, last_failure FROM login_failures WHERE account_key = ?"), key).
		Scan(&f.Count, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return user.Failures{}, nil
	}
	if err != nil {
		return user.Failures{}, fmt.Errorf("get login failures: %w", err)
	}
	f.Last = sqldb.FromMicros(last)
	return f, nil
}

// RecordLoginFailure implements user.Store in one statement, so that failures counted at once
// by several replicas all count.
func (s *Users) RecordLoginFailure(ctx context.Context, key string, t, forgetBefore time.Time) error {
	_, err := s.DB.ExecContext(ctx, s.DB.Rebind(`INSERT INTO login_failures (account_key, failures, last_failure) VALUES (?, 1, ?)
		ON CONFLICT (account_key) DO UPDATE SET
			failures = CASE WHEN login_failures.last_failure < ? THEN 1 ELSE login_failures.failures + 1 END,
			last_failure = excluded.last_failure`),
		key, sqldb.Micros(t), sqldb.Micros(forgetBefore))
	if err != nil {
		return fmt.Errorf("record login failure: %w", err)
	}
	return nil
}

// ClearLoginFailures implements user.Store.
func (s *Users) ClearLoginFailures(ctx context.Context, key string) error {
	if _, err := s.DB.ExecContext(ctx, s.DB.Rebind("DELETE FROM login_failures WHERE account_key = ?"), key); err != nil {
		return fmt.Errorf("clear login failures: %w", err)
	}
	return nil
}

// PruneLoginFailures implements user.Store.
func (s *Users) PruneLoginFailures(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.DB.ExecContext(ctx, s.DB.Rebind("DELETE FROM login_failures WHERE last_failure < ?"), sqldb.Micros(before))
	if err != nil {
		return 0, fmt.Errorf("prune login failures: %w", err)
	}
	return res.RowsAffected()
}
