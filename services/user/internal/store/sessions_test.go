package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// TestSessions runs the session suite against SQLite and PostgreSQL.
func TestSessions(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) { sessionSuite(t, db.New(t)) })
}

func sessionSuite(t *testing.T, dsn string) {
	ctx := context.Background()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ada, bob := account(1), account(2)
	for _, u := range []user.User{ada, bob} {
		if err := s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	token := func(sess, hash, parent string, at time.Time) user.RefreshToken {
		return user.RefreshToken{Hash: hash, SessionID: sess, ParentHash: parent, CreateTime: at, ExpireTime: at.Add(time.Hour)}
	}
	open := func(id, userID, hash string) {
		t.Helper()
		if err := s.CreateSession(ctx, user.Session{ID: id, UserID: userID, CreateTime: now}, token(id, hash, "", now)); err != nil {
			t.Fatalf("CreateSession %s: %v", id, err)
		}
	}
	open("s1", ada.ID, "h1")
	open("s2", ada.ID, "h2")
	open("s3", bob.ID, "h3")

	rt, sess, err := s.GetRefreshToken(ctx, "h1")
	if err != nil || rt.SessionID != "s1" || sess.UserID != ada.ID || !rt.ExpireTime.Equal(now.Add(time.Hour)) || !rt.UsedTime.IsZero() || !sess.RevokeTime.IsZero() {
		t.Fatalf("GetRefreshToken = %+v, %+v, %v", rt, sess, err)
	}
	if _, _, err := s.GetRefreshToken(ctx, "nope"); !errors.Is(err, user.ErrBadRefreshToken) {
		t.Errorf("GetRefreshToken of an unknown hash = %v, want ErrBadRefreshToken", err)
	}

	// Rotation spends the token once: the second try is ErrRefreshTokenSpent and stores nothing.
	later := now.Add(time.Minute)
	if err := s.RotateRefreshToken(ctx, "h1", token("s1", "h1b", "h1", later)); err != nil {
		t.Fatalf("RotateRefreshToken: %v", err)
	}
	if err := s.RotateRefreshToken(ctx, "h1", token("s1", "h1c", "h1", later)); !errors.Is(err, user.ErrRefreshTokenSpent) {
		t.Errorf("a second rotation of h1 = %v, want ErrRefreshTokenSpent", err)
	}
	if _, _, err := s.GetRefreshToken(ctx, "h1c"); !errors.Is(err, user.ErrBadRefreshToken) {
		t.Errorf("the refused rotation stored its token: %v", err)
	}
	spent, _, err := s.GetRefreshToken(ctx, "h1")
	if err != nil || !spent.UsedTime.Equal(later) {
		t.Errorf("h1 after its rotation = %+v, %v; want used at %v", spent, err, later)
	}
	child, _, err := s.GetRefreshToken(ctx, "h1b")
	if err != nil || child.ParentHash != "h1" || !child.UsedTime.IsZero() {
		t.Errorf("h1b = %+v, %v", child, err)
	}

	// Concurrent rotations of one token: exactly one wins, on either database.
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		wins int
	)
	for i := range 4 {
		wg.Go(func() {
			err := s.RotateRefreshToken(ctx, "h2", token("s2", "h2-"+string(rune('a'+i)), "h2", later))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, user.ErrRefreshTokenSpent):
				t.Errorf("a concurrent rotation: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent rotations of one token succeeded, want 1", wins)
	}

	// A revoked session rotates no more.
	if err := s.RevokeSession(ctx, "s1", later); err != nil {
		t.Fatal(err)
	}
	if err := s.RotateRefreshToken(ctx, "h1b", token("s1", "h1d", "h1b", later)); !errors.Is(err, user.ErrRefreshTokenSpent) {
		t.Errorf("rotation in a revoked session = %v, want ErrRefreshTokenSpent", err)
	}
	if _, sess, _ := s.GetRefreshToken(ctx, "h1b"); !sess.RevokeTime.Equal(later) {
		t.Errorf("s1 revoked at %v, want %v", sess.RevokeTime, later)
	}
	// Revoking again keeps the first time.
	if err := s.RevokeSession(ctx, "s1", later.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, sess, _ := s.GetRefreshToken(ctx, "h1b"); !sess.RevokeTime.Equal(later) {
		t.Errorf("a second revocation moved s1's revoke time to %v", sess.RevokeTime)
	}

	// UpdateEndingSessions writes the account and ends its sessions, not another's.
	changed := ada
	changed.Version, changed.UpdateTime, changed.PasswordHash = 2, later.Add(time.Second), "$argon2id$new"
	if err := s.UpdateEndingSessions(ctx, changed); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Get(ctx, user.Lookup{ID: ada.ID}); got.Version != 2 || got.PasswordHash != "$argon2id$new" {
		t.Errorf("the account after UpdateEndingSessions = %+v", got)
	}
	if _, sess, _ := s.GetRefreshToken(ctx, "h2"); !sess.RevokeTime.Equal(changed.UpdateTime) {
		t.Errorf("ada's session s2 revoked at %v, want %v", sess.RevokeTime, changed.UpdateTime)
	}
	if _, sess, _ := s.GetRefreshToken(ctx, "h3"); !sess.RevokeTime.IsZero() {
		t.Errorf("bob's session was revoked with ada's")
	}
	// A stale version changes nothing, sessions included.
	stale := bob
	stale.Version = 5
	if err := s.UpdateEndingSessions(ctx, stale); !errors.Is(err, user.ErrStale) {
		t.Errorf("UpdateEndingSessions of a stale version = %v, want ErrStale", err)
	}
	if _, sess, _ := s.GetRefreshToken(ctx, "h3"); !sess.RevokeTime.IsZero() {
		t.Errorf("a failed UpdateEndingSessions revoked bob's session")
	}

	// Expired tokens of a session go at its next rotation.
	open("s4", bob.ID, "h4")
	if err := s.RotateRefreshToken(ctx, "h4", token("s4", "h4b", "h4", now.Add(2*time.Hour))); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.GetRefreshToken(ctx, "h4"); !errors.Is(err, user.ErrBadRefreshToken) {
		t.Errorf("an expired token outlived its session's rotation: %v", err)
	}
	// A new login sweeps the account's expired tokens, and the sessions left without one; a
	// live token, and another account's expired one, stay.
	if err := s.CreateSession(ctx, user.Session{ID: "s5", UserID: bob.ID, CreateTime: now.Add(90 * time.Minute)},
		token("s5", "h5", "", now.Add(90*time.Minute))); err != nil {
		t.Fatal(err)
	}
	for hash, live := range map[string]bool{"h3": false, "h4b": true, "h5": true, "h1b": true} {
		_, _, err := s.GetRefreshToken(ctx, hash)
		if live != (err == nil) {
			t.Errorf("after a login of bob 90 minutes later, %s: %v (want it kept: %v)", hash, err, live)
		}
	}
	var sessions int
	if err := s.DB.QueryRowContext(ctx, s.DB.Rebind("SELECT COUNT(*) FROM refresh_sessions WHERE user_id = ?"), bob.ID).Scan(&sessions); err != nil || sessions != 2 {
		t.Errorf("bob has %d sessions (%v), want 2 (s4 and s5; s3 swept)", sessions, err)
	}
}
