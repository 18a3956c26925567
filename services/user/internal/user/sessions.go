package user

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
)

// DefaultRefreshTTL is how long a refresh token is accepted after it was issued, unless spent or
// revoked first (WithRefreshTTL).
const DefaultRefreshTTL = 30 * 24 * time.Hour

// refreshPrefix starts every refresh token, so that one found in a log or a repository is
// recognisable for what it is.
const refreshPrefix = "mmr_"

// Session is one login: the refresh tokens it issues, each replacing the last, share it, and
// ending it ends all of them.
type Session struct {
	ID         string
	UserID     string
	CreateTime time.Time
	RevokeTime time.Time // zero while the session lives
}

// RefreshToken is one refresh token of a session, as stored: its hash, never the token.
type RefreshToken struct {
	Hash       string // hex SHA-256 of the token
	SessionID  string
	ParentHash string // the token it replaced; empty for a session's first
	CreateTime time.Time
	ExpireTime time.Time
	UsedTime   time.Time // when it was spent; zero while it is the session's current token
}

// Tokens are what a login or a refresh hands out: an access token, and the refresh token that
// renews it.
type Tokens struct {
	Access        string
	AccessExpiry  time.Time
	Refresh       string
	RefreshExpiry time.Time
}

// Errors of the session rules.
var (
	// ErrBadRefreshToken: the refresh token is unknown, expired, spent or revoked, or its account
	// was deleted; deliberately one answer for all.
	ErrBadRefreshToken = fault.New(fault.Unauthenticated, "invalid refresh token: log in again")
	// ErrRefreshTokenNotFound: Logout with a refresh token the caller does not hold.
	ErrRefreshTokenNotFound = fault.New(fault.NotFound, "refresh token not found")
	// ErrWrongPassword: ChangePassword with a current password that does not match.
	ErrWrongPassword = fault.Invalid("current_password", "does not match the account's password")
	// ErrRefreshTokenSpent: a store found the token already spent, or its session ended, when it
	// went to spend it (another refresh won the race). Never reaches a client.
	ErrRefreshTokenSpent = errors.New("refresh token already spent or revoked")
)

// SessionStore keeps sessions and refresh tokens. Implementations must be safe for concurrent use
// by several replicas sharing one database.
type SessionStore interface {
	// CreateSession stores a new session with its first refresh token.
	CreateSession(ctx context.Context, s Session, first RefreshToken) error
	// GetRefreshToken returns the refresh token with this hash and its session, or
	// ErrBadRefreshToken.
	GetRefreshToken(ctx context.Context, hash string) (RefreshToken, Session, error)
	// RotateRefreshToken marks the token with hash spent at next.CreateTime and stores next in
	// its session, in one transaction, only if it was not spent and its session not revoked:
	// else ErrRefreshTokenSpent and nothing changes. Expired tokens of the session are dropped.
	RotateRefreshToken(ctx context.Context, hash string, next RefreshToken) error
	// RevokeSession ends session id at the given time; ending an ended one changes nothing.
	RevokeSession(ctx context.Context, id string, at time.Time) error
	// UpdateEndingSessions is Store.Update that also ends every live session of the account at
	// u.UpdateTime, in the same transaction.
	UpdateEndingSessions(ctx context.Context, u User) error
}

// WithRefreshTTL sets how long a refresh token is accepted after it was issued (DefaultRefreshTTL
// when not set or not positive). Each refresh issues a token with a full lifetime, so a session
// used at least once per d lives on; one left alone for d ends.
func WithRefreshTTL(d time.Duration) Option {
	return func(s *Service) {
		if d > 0 {
			s.refreshTTL = d
		}
	}
}

// newRefreshToken returns a fresh token (256 bits from crypto/rand) and its stored form.
func (s *Service) newRefreshToken(sessionID, parent string, now time.Time) (string, RefreshToken) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it crashes the program instead)
	token := refreshPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, RefreshToken{Hash: hashRefresh(token), SessionID: sessionID, ParentHash: parent,
		CreateTime: now, ExpireTime: now.Add(s.refreshTTL)}
}

// hashRefresh is the stored form of a refresh token. SHA-256 suffices where a password would need
// Argon2: the token is 256 random bits, so there is no dictionary to try, and the lookup by hash
// must stay an index probe.
func hashRefresh(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// StartSession opens a session for u, who just proved their password, and returns its first
// refresh token and when it expires. Login's transport calls it after Login.
func (s *Service) StartSession(ctx context.Context, u User) (string, time.Time, error) {
	now := s.now().Truncate(time.Microsecond)
	sess := Session{ID: uuid.NewString(), UserID: u.ID, CreateTime: now}
	token, rt := s.newRefreshToken(sess.ID, "", now)
	if err := s.store.CreateSession(ctx, sess, rt); err != nil {
		return "", time.Time{}, fmt.Errorf("start a session for %s: %w", u.ID, err)
	}
	return token, rt.ExpireTime, nil
}

// Refresh spends a refresh token for a new access token, signed with the account's roles as they
// are now, and the session's next refresh token. Anything wrong is ErrBadRefreshToken. A token
// spent before is a replay: one of its holders stole it, and as nobody can tell which, the whole
// session ends (OAuth 2.0 Security BCP, refresh token rotation).
func (s *Service) Refresh(ctx context.Context, token string) (Tokens, error) {
	if !strings.HasPrefix(token, refreshPrefix) {
		return Tokens{}, ErrBadRefreshToken
	}
	now := s.now().Truncate(time.Microsecond)
	hash := hashRefresh(token)
	rt, sess, err := s.store.GetRefreshToken(ctx, hash)
	if err != nil {
		return Tokens{}, err
	}
	switch {
	case !sess.RevokeTime.IsZero() || !now.Before(rt.ExpireTime):
		return Tokens{}, ErrBadRefreshToken
	case !rt.UsedTime.IsZero():
		return Tokens{}, s.replayed(ctx, sess, now)
	}
	u, err := s.store.Get(ctx, Lookup{ID: sess.UserID})
	if errors.Is(err, ErrNotFound) || err == nil && u.Status == StatusDeleted {
		return Tokens{}, ErrBadRefreshToken
	}
	if err != nil {
		return Tokens{}, err
	}
	next, nextRT := s.newRefreshToken(sess.ID, hash, now)
	if err := s.store.RotateRefreshToken(ctx, hash, nextRT); errors.Is(err, ErrRefreshTokenSpent) {
		// Spent by a concurrent refresh, or the session ended meanwhile: a replay all the same.
		return Tokens{}, s.replayed(ctx, sess, now)
	} else if err != nil {
		return Tokens{}, err
	}
	access, exp, err := s.issue(u)
	if err != nil {
		return Tokens{}, err
	}
	return Tokens{Access: access, AccessExpiry: exp, Refresh: next, RefreshExpiry: nextRT.ExpireTime}, nil
}

// replayed ends sess, whose spent refresh token was sent again, and answers ErrBadRefreshToken.
func (s *Service) replayed(ctx context.Context, sess Session, now time.Time) error {
	if err := s.store.RevokeSession(ctx, sess.ID, now); err != nil {
		return fmt.Errorf("end session %s after a replayed refresh token: %w", sess.ID, err)
	}
	return ErrBadRefreshToken
}

// Logout ends the session of refresh token token, which must be the caller's (else
// ErrRefreshTokenNotFound, as for an unknown token, so that Logout tells nobody whose a token
// is). A spent token ends its session too; an ended session stays ended.
func (s *Service) Logout(ctx context.Context, caller auth.Identity, token string) error {
	_, sess, err := s.store.GetRefreshToken(ctx, hashRefresh(token))
	if errors.Is(err, ErrBadRefreshToken) || err == nil && sess.UserID != caller.Subject {
		return ErrRefreshTokenNotFound
	}
	if err != nil {
		return err
	}
	if !sess.RevokeTime.IsZero() {
		return nil
	}
	return s.store.RevokeSession(ctx, sess.ID, s.now().Truncate(time.Microsecond))
}

// ChangePassword sets the caller's password to newPassword when current is the password now
// (else ErrWrongPassword), and ends every session of the account.
func (s *Service) ChangePassword(ctx context.Context, caller auth.Identity, current, newPassword string) (User, error) {
	if len(newPassword) < 8 {
		return User{}, fault.Invalid("new_password", "must be at least 8 characters")
	}
	u, err := s.live(ctx, Lookup{ID: caller.Subject})
	if err != nil {
		return User{}, err
	}
	// The current password is a login's secret: checking it takes a hashing slot and counts
	// against the account's backoff like a login, so a stolen access token cannot be used to
	// guess it faster than Login allows.
	now := s.now().Truncate(time.Microsecond)
	key := accountKey(u, true, Lookup{})
	if _, err := s.accountGuard(ctx, key, now); err != nil {
		return User{}, err
	}
	release, err := s.hashSlot(ctx)
	if err != nil {
		return User{}, err
	}
	ok, err := CheckPassword(u.PasswordHash, current)
	if err == nil && ok {
		u.PasswordHash, err = HashPassword(newPassword)
	}
	release()
	if err != nil {
		return User{}, fmt.Errorf("change password of %s: %w", u.ID, err)
	}
	if !ok {
		if err := s.loginFailed(ctx, key, now); err != nil {
			return User{}, err
		}
		return User{}, ErrWrongPassword
	}
	return s.saveEndingSessions(ctx, u)
}

// saveEndingSessions is save that also ends every session of the account: after it, no refresh
// token issued before works, so the account's access ends within one access-token lifetime.
func (s *Service) saveEndingSessions(ctx context.Context, u User) (User, error) {
	return s.write(ctx, u, s.store.UpdateEndingSessions)
}

// issue signs an access token for u stating its status, which the other services may take at its
// word for the token's lifetime (the order service then places an order without asking whether
// the account is active): an account suspended or deleted after the token was issued keeps what
// the token says until it expires, as it keeps its access.
func (s *Service) issue(u User) (string, time.Time, error) {
	status := auth.AccountActive
	if u.Status != StatusActive {
		status = auth.AccountSuspended // a deleted account gets no token
	}
	return s.issuer.IssueWithStatus(u.ID, u.Roles, status)
}
