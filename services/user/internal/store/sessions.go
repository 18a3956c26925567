package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// CreateSession implements user.SessionStore. It also sweeps the account's expired refresh tokens
// and the sessions left without any, so that an account logging in again and again (and never
// refreshing, whose sessions RotateRefreshToken never prunes) keeps one lifetime's worth of rows.
func (s *Users) CreateSession(ctx context.Context, sess user.Session, first user.RefreshToken) error {
	return sqldb.InTx(ctx, s.DB, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.DB.Rebind(`DELETE FROM refresh_tokens WHERE expire_time < ?
			AND session_id IN (SELECT id FROM refresh_sessions WHERE user_id = ?)`), sqldb.Micros(sess.CreateTime), sess.UserID); err != nil {
			return fmt.Errorf("drop expired refresh tokens: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.DB.Rebind(`DELETE FROM refresh_sessions WHERE user_id = ?
			AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = refresh_sessions.id)`), sess.UserID); err != nil {
			return fmt.Errorf("drop spent sessions: %w", err)
		}
		if _, err := tx.ExecContext(ctx, s.DB.Rebind("INSERT INTO refresh_sessions (id, user_id, create_time, revoke_time) VALUES (?, ?, ?, 0)"),
			sess.ID, sess.UserID, sqldb.Micros(sess.CreateTime)); err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		return s.insertRefresh(ctx, tx, first)
	})
}

func (s *Users) insertRefresh(ctx context.Context, tx *sql.Tx, rt user.RefreshToken) error {
	_, err := tx.ExecContext(ctx, s.DB.Rebind(`INSERT INTO refresh_tokens (token_hash, session_id, parent_hash, create_time, expire_time, used_time)
		VALUES (?, ?, ?, ?, ?, 0)`), rt.Hash, rt.SessionID, rt.ParentHash, sqldb.Micros(rt.CreateTime), sqldb.Micros(rt.ExpireTime))
	if err != nil {
		return fmt.Errorf("store refresh token: %w", err)
	}
	return nil
}

// GetRefreshToken implements user.SessionStore.
func (s *Users) GetRefreshToken(ctx context.Context, hash string) (user.RefreshToken, user.Session, error) {
	var (
		rt                                     user.RefreshToken
		sess                                   user.Session
		created, expires, used, began, revoked int64
	)
	err := s.DB.QueryRowContext(ctx, s.DB.Rebind(`SELECT t.token_hash, t.session_id, t.parent_hash, t.create_time, t.expire_time, t.used_time,
		s.user_id, s.create_time, s.revoke_time
		FROM refresh_tokens t JOIN refresh_sessions s ON s.id = t.session_id WHERE t.token_hash = ?`), hash).
		Scan(&rt.Hash, &rt.SessionID, &rt.ParentHash, &created, &expires, &used, &sess.UserID, &began, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return user.RefreshToken{}, user.Session{}, user.ErrBadRefreshToken
	}
	if err != nil {
		return user.RefreshToken{}, user.Session{}, fmt.Errorf("get refresh token: %w", err)
	}
	rt.CreateTime, rt.ExpireTime, rt.UsedTime = sqldb.FromMicros(created), sqldb.FromMicros(expires), sqldb.FromMicros(used)
	sess.ID, sess.CreateTime, sess.RevokeTime = rt.SessionID, sqldb.FromMicros(began), sqldb.FromMicros(revoked)
	return rt, sess, nil
}

// RotateRefreshToken implements user.SessionStore. It first touches the session's row, which
// takes its lock on PostgreSQL (SQLite's write transactions lock the database when they begin),
// so a rotation and RevokeSession or UpdateEndingSessions on the same session happen one after
// the other: a session ended while a refresh is under way cannot gain a live token.
func (s *Users) RotateRefreshToken(ctx context.Context, hash string, next user.RefreshToken) error {
	now := sqldb.Micros(next.CreateTime)
	return sqldb.InTx(ctx, s.DB, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.DB.Rebind("UPDATE refresh_sessions SET revoke_time = 0 WHERE id = ? AND revoke_time = 0"), next.SessionID)
		if err := spent(res, err); err != nil {
			return err
		}
		res, err = tx.ExecContext(ctx, s.DB.Rebind("UPDATE refresh_tokens SET used_time = ? WHERE token_hash = ? AND session_id = ? AND used_time = 0"),
			now, hash, next.SessionID)
		if err := spent(res, err); err != nil {
			return err
		}
		// Tokens past their expiry can no longer be used, nor replayed to any effect: they go,
		// so a long session keeps at most one lifetime's worth of spent tokens.
		if _, err := tx.ExecContext(ctx, s.DB.Rebind("DELETE FROM refresh_tokens WHERE session_id = ? AND expire_time < ?"), next.SessionID, now); err != nil {
			return fmt.Errorf("drop expired refresh tokens: %w", err)
		}
		return s.insertRefresh(ctx, tx, next)
	})
}

// spent reports a conditional update that matched no row as user.ErrRefreshTokenSpent.
func spent(res sql.Result, err error) error {
	if err != nil {
		return fmt.Errorf("spend refresh token: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("spend refresh token: %w", err)
	}
	if n == 0 {
		return user.ErrRefreshTokenSpent
	}
	return nil
}

// RevokeSession implements user.SessionStore.
func (s *Users) RevokeSession(ctx context.Context, id string, at time.Time) error {
	if _, err := s.DB.ExecContext(ctx, s.DB.Rebind("UPDATE refresh_sessions SET revoke_time = ? WHERE id = ? AND revoke_time = 0"),
		sqldb.Micros(at), id); err != nil {
		return fmt.Errorf("revoke session %s: %w", id, err)
	}
	return nil
}

// UpdateEndingSessions implements user.SessionStore.
func (s *Users) UpdateEndingSessions(ctx context.Context, u user.User) error {
	return sqldb.InTx(ctx, s.DB, func(tx *sql.Tx) error {
		if err := s.update(ctx, tx, u); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.DB.Rebind("UPDATE refresh_sessions SET revoke_time = ? WHERE user_id = ? AND revoke_time = 0"),
			sqldb.Micros(u.UpdateTime), u.ID); err != nil {
			return fmt.Errorf("end the sessions of %s: %w", u.ID, err)
		}
		return nil
	})
}
