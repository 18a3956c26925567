package user_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// logIn logs u in and opens a session, as the Login RPC does, returning the refresh token.
func logIn(t *testing.T, svc *user.Service, u user.User, password string) string {
	t.Helper()
	ctx := context.Background()
	_, _, who, err := svc.Login(ctx, user.Lookup{ID: u.ID}, password)
	if err != nil {
		t.Fatalf("Login: %v", err)
	}
	refresh, exp, err := svc.StartSession(ctx, who)
	if err != nil || !strings.HasPrefix(refresh, "mmr_") || exp.Before(time.Now().Add(29*24*time.Hour)) {
		t.Fatalf("StartSession = %q, %v, %v", refresh, exp, err)
	}
	return refresh
}

func wantBadRefresh(t *testing.T, what string, svc *user.Service, token string) {
	t.Helper()
	if _, err := svc.Refresh(context.Background(), token); !errors.Is(err, user.ErrBadRefreshToken) {
		t.Errorf("%s: Refresh = %v, want ErrBadRefreshToken", what, err)
	}
}

func TestRefreshRotatesAndAReplayEndsTheSession(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	ada := signUp(t, svc, "ada")
	first := logIn(t, svc, ada, "correct horse")

	second, err := svc.Refresh(context.Background(), first)
	if err != nil || second.Access == "" || second.Refresh == "" || second.Refresh == first || !second.AccessExpiry.After(time.Now()) {
		t.Fatalf("Refresh = %+v, %v", second, err)
	}
	third, err := svc.Refresh(context.Background(), second.Refresh)
	if err != nil {
		t.Fatalf("Refresh of the new token: %v", err)
	}
	// The first token, spent, is sent again: someone holds a copy. The session ends, so the
	// newest token, whoever holds it, is refused too.
	wantBadRefresh(t, "the spent first token", svc, first)
	wantBadRefresh(t, "the newest token after a replay", svc, third.Refresh)
	// Another session of the same account is untouched.
	other := logIn(t, svc, ada, "correct horse")
	if _, err := svc.Refresh(context.Background(), other); err != nil {
		t.Errorf("another session after the replay: %v", err)
	}
	for _, bad := range []string{"", "mmr_", "mmr_notatoken", "eyJhbGciOiJFZERTQSJ9.e30.x"} {
		wantBadRefresh(t, "made-up token "+bad, svc, bad)
	}
}

// Two refreshes with the same token at once: one wins, the other is a replay and ends the
// session, so the winner's new token dies too. No interleaving may hand out two live tokens.
func TestConcurrentRefreshesOfOneToken(t *testing.T) {
	t.Parallel()
	svc := newService(t)
	ada := signUp(t, svc, "ada")
	token := logIn(t, svc, ada, "correct horse")
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		won  []string
		errs []error
	)
	for range 4 {
		wg.Go(func() {
			got, err := svc.Refresh(context.Background(), token)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			won = append(won, got.Refresh)
		})
	}
	wg.Wait()
	if len(won) > 1 {
		t.Fatalf("%d refreshes of one token succeeded, want at most 1", len(won))
	}
	for _, err := range errs {
		if !errors.Is(err, user.ErrBadRefreshToken) {
			t.Errorf("a losing refresh = %v, want ErrBadRefreshToken", err)
		}
	}
	for _, w := range won {
		wantBadRefresh(t, "the winner's token after the replays", svc, w)
	}
}

func TestRefreshTokensExpire(t *testing.T) {
	t.Parallel()
	s := testkit.OpenSQLite(t, store.Open)
	svc, err := user.NewService(s, testkit.NewKeys(t).Issuer, user.WithRefreshTTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ada := signUp(t, svc, "ada")
	ctx := context.Background()
	_, _, who, err := svc.Login(ctx, user.Lookup{ID: ada.ID}, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	token, exp, err := svc.StartSession(ctx, who)
	if err != nil || exp.After(time.Now().Add(time.Second)) {
		t.Fatalf("StartSession = %v, %v", exp, err)
	}
	time.Sleep(400 * time.Millisecond)
	wantBadRefresh(t, "an expired token", svc, token)
}

// Each way an account's access must end ends every session of it: the refresh tokens issued
// before stop working, so access ends with the last access token.
func TestSessionsEndWithTheAccountsAccess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		end  func(t *testing.T, svc *user.Service, u user.User) error
	}{
		{"delete", func(t *testing.T, svc *user.Service, u user.User) error {
			_, err := svc.Delete(ctx, self(u), u.ID, "")
			return err
		}},
		{"suspend", func(t *testing.T, svc *user.Service, u user.User) error {
			_, err := svc.Update(ctx, admin, u.ID, "", user.Patch{Paths: []string{"status"}, Status: user.StatusSuspended})
			return err
		}},
		{"change password", func(t *testing.T, svc *user.Service, u user.User) error {
			_, err := svc.ChangePassword(ctx, self(u), "correct horse", "new horse battery")
			return err
		}},
		{"made an admin (a role change)", func(t *testing.T, svc *user.Service, u user.User) error {
			_, _, err := svc.EnsureAdmin(ctx, user.Admin{Email: u.Email, Password: "correct horse"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			svc := newService(t)
			ada, bob := signUp(t, svc, "ada"), signUp(t, svc, "bob")
			one, two := logIn(t, svc, ada, "correct horse"), logIn(t, svc, ada, "correct horse")
			spent, err := svc.Refresh(ctx, two)
			if err != nil {
				t.Fatal(err)
			}
			bobs := logIn(t, svc, bob, "correct horse")
			if err := tt.end(t, svc, ada); err != nil {
				t.Fatal(err)
			}
			wantBadRefresh(t, "a session's first token", svc, one)
			wantBadRefresh(t, "a refreshed session's token", svc, spent.Refresh)
			if _, err := svc.Refresh(ctx, bobs); err != nil {
				t.Errorf("another account's session: %v", err)
			}
		})
	}
	// Profile changes end nothing.
	svc := newService(t)
	ada := signUp(t, svc, "ada")
	token := logIn(t, svc, ada, "correct horse")
	if _, err := svc.Update(ctx, self(ada), ada.ID, "", user.Patch{Paths: []string{"given_name"}, GivenName: "Augusta"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Refresh(ctx, token); err != nil {
		t.Errorf("Refresh after a name change: %v", err)
	}
}

func TestChangePassword(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := newService(t)
	ada := signUp(t, svc, "ada")
	if _, err := svc.ChangePassword(ctx, self(ada), "wrong horse", "new horse battery"); !errors.Is(err, user.ErrWrongPassword) {
		t.Errorf("a wrong current password = %v, want ErrWrongPassword", err)
	}
	if _, err := svc.ChangePassword(ctx, self(ada), "correct horse", "short"); err == nil {
		t.Errorf("a short new password was accepted")
	}
	changed, err := svc.ChangePassword(ctx, self(ada), "correct horse", "new horse battery")
	if err != nil || changed.Version != ada.Version+1 {
		t.Fatalf("ChangePassword = %+v, %v", changed, err)
	}
	if _, _, _, err := svc.Login(ctx, user.Lookup{Username: "ada"}, "correct horse"); !errors.Is(err, user.ErrBadCredentials) {
		t.Errorf("the old password still logs in: %v", err)
	}
	if _, _, _, err := svc.Login(ctx, user.Lookup{Username: "ada"}, "new horse battery"); err != nil {
		t.Errorf("the new password: %v", err)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := newService(t)
	ada, bob := signUp(t, svc, "ada"), signUp(t, svc, "bob")
	first := logIn(t, svc, ada, "correct horse")
	next, err := svc.Refresh(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Logout(ctx, self(bob), next.Refresh); !errors.Is(err, user.ErrRefreshTokenNotFound) {
		t.Errorf("bob logs ada out = %v, want ErrRefreshTokenNotFound", err)
	}
	if err := svc.Logout(ctx, self(ada), "mmr_unknown"); !errors.Is(err, user.ErrRefreshTokenNotFound) {
		t.Errorf("Logout of an unknown token = %v, want ErrRefreshTokenNotFound", err)
	}
	last, err := svc.Refresh(ctx, next.Refresh)
	if err != nil {
		t.Fatalf("the refused logouts ended the session: %v", err)
	}
	// Logging out with the session's spent first token ends the session all the same.
	if err := svc.Logout(ctx, self(ada), first); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if err := svc.Logout(ctx, self(ada), first); err != nil {
		t.Errorf("a second Logout: %v", err)
	}
	wantBadRefresh(t, "after Logout", svc, last.Refresh)
}

// TestTokensStateTheAccountsStatus: access tokens from Login and Refresh state the account's
// status, which the order service takes at its word for the token's lifetime: active for an
// active account, suspended for a suspended one (which may still log in and read its data).
func TestTokensStateTheAccountsStatus(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	keys := testkit.NewKeys(t)
	svc, err := user.NewService(testkit.OpenSQLite(t, store.Open), keys.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	verifier, err := auth.NewVerifier([]ed25519.PublicKey{keys.Issuer.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	status := func(what, token string) string {
		t.Helper()
		id, err := verifier.Verify(token)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return id.AccountStatus
	}
	ada := signUp(t, svc, "ada")
	refresh := logIn(t, svc, ada, "correct horse")
	login, _, _, err := svc.Login(ctx, user.Lookup{ID: ada.ID}, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	refreshed, err := svc.Refresh(ctx, refresh)
	if err != nil {
		t.Fatal(err)
	}
	if got, got2 := status("login", login), status("refresh", refreshed.Access); got != auth.AccountActive || got2 != auth.AccountActive {
		t.Errorf("an active account's tokens state %q (login) and %q (refresh), want %q", got, got2, auth.AccountActive)
	}
	if _, err := svc.Update(ctx, admin, ada.ID, "", user.Patch{Paths: []string{"status"}, Status: user.StatusSuspended}); err != nil {
		t.Fatal(err)
	}
	refresh = logIn(t, svc, ada, "correct horse")
	login, _, _, err = svc.Login(ctx, user.Lookup{ID: ada.ID}, "correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if refreshed, err = svc.Refresh(ctx, refresh); err != nil {
		t.Fatal(err)
	}
	if got, got2 := status("login", login), status("refresh", refreshed.Access); got != auth.AccountSuspended || got2 != auth.AccountSuspended {
		t.Errorf("a suspended account's tokens state %q (login) and %q (refresh), want %q", got, got2, auth.AccountSuspended)
	}
}
