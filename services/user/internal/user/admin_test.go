package user_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// isAdmin reports whether u is an active admin whose password is password.
func isAdmin(t *testing.T, u user.User, password string) bool {
	t.Helper()
	ok, err := user.CheckPassword(u.PasswordHash, password)
	return err == nil && ok && u.Status == user.StatusActive && slices.Contains(u.Roles, user.RoleAdmin)
}

func TestEnsureAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("creates", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		u, created, err := svc.EnsureAdmin(ctx, user.Admin{Email: " Root@Example.com", Password: "first password"})
		if err != nil || !created || u.Email != "root@example.com" || u.Username != "root" || !isAdmin(t, u, "first password") {
			t.Fatalf("EnsureAdmin = %+v, %v, %v", u, created, err)
		}
		if _, _, who, err := svc.Login(ctx, user.Lookup{Email: "root@example.com"}, "first password"); err != nil || who.ID != u.ID {
			t.Errorf("the admin cannot log in: %v", err)
		}
	})

	t.Run("idempotent", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		a := user.Admin{Email: "root@example.com", Username: "boss", Password: "first password"}
		first, _, err := svc.EnsureAdmin(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		again, created, err := svc.EnsureAdmin(ctx, a)
		if err != nil || created || again.ID != first.ID || again.Version != first.Version || again.Username != "boss" {
			t.Errorf("second EnsureAdmin = %+v, %v, %v; want the same account, unwritten", again, created, err)
		}
	})

	t.Run("password changed", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		first, _, err := svc.EnsureAdmin(ctx, user.Admin{Email: "root@example.com", Password: "first password"})
		if err != nil {
			t.Fatal(err)
		}
		u, created, err := svc.EnsureAdmin(ctx, user.Admin{Email: "root@example.com", Password: "second password"})
		if err != nil || created || u.ID != first.ID || u.Version != first.Version+1 || !isAdmin(t, u, "second password") {
			t.Fatalf("EnsureAdmin with a new password = %+v, %v, %v", u, created, err)
		}
		if _, _, _, err := svc.Login(ctx, user.Lookup{Email: "root@example.com"}, "first password"); !errors.Is(err, user.ErrBadCredentials) {
			t.Errorf("the old password still logs in: %v", err)
		}
	})

	t.Run("promotes an existing account", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		ada := signUp(t, svc, "ada")
		if _, err := svc.Update(ctx, admin, ada.ID, "", user.Patch{Paths: []string{"status"}, Status: user.StatusSuspended}); err != nil {
			t.Fatal(err)
		}
		u, created, err := svc.EnsureAdmin(ctx, user.Admin{Email: "ADA@example.com", Password: "operator's choice"})
		if err != nil || created || u.ID != ada.ID || u.Username != "ada" || !isAdmin(t, u, "operator's choice") {
			t.Fatalf("EnsureAdmin of ada = %+v, %v, %v", u, created, err)
		}
		if _, _, who, err := svc.Login(ctx, user.Lookup{Username: "ada"}, "operator's choice"); err != nil || !slices.Contains(who.Roles, user.RoleAdmin) {
			t.Errorf("promoted ada logs in as %v, %v", who.Roles, err)
		}
	})

	t.Run("revives a deleted account", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		bob := signUp(t, svc, "bob")
		if _, err := svc.Delete(ctx, self(bob), bob.ID, ""); err != nil {
			t.Fatal(err)
		}
		u, _, err := svc.EnsureAdmin(ctx, user.Admin{Email: "bob@example.com", Password: "back again"})
		if err != nil || u.ID != bob.ID || !u.DeleteTime.IsZero() || !isAdmin(t, u, "back again") {
			t.Fatalf("EnsureAdmin of deleted bob = %+v, %v", u, err)
		}
	})

	t.Run("invalid", func(t *testing.T) {
		t.Parallel()
		svc := newService(t)
		for _, a := range []user.Admin{{Email: "", Password: "long enough"}, {Email: "root@example.com", Password: "short"}} {
			if _, _, err := svc.EnsureAdmin(ctx, a); fault.CodeOf(err) != fault.InvalidArgument {
				t.Errorf("EnsureAdmin(%q, %q) = %v, want an invalid argument", a.Email, a.Password, err)
			}
		}
	})
}

func TestNewPassword(t *testing.T) {
	t.Parallel()
	a, b := user.NewPassword(), user.NewPassword()
	if len(a) < 20 || a == b {
		t.Errorf("NewPassword gave %q and %q", a, b)
	}
}
