package user_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// newService returns a service on a fresh SQLite file: a real store, no network.
func newService(t *testing.T) *user.Service {
	t.Helper()
	s := testkit.OpenSQLite(t, store.Open)
	svc, err := user.NewService(s, testkit.NewKeys(t).Issuer)
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func signUp(t *testing.T, svc *user.Service, name string) user.User {
	t.Helper()
	u, err := svc.Create(context.Background(), user.NewUser{
		Email: strings.ToUpper(name) + "@Example.com ", Username: " " + strings.ToUpper(name), Password: "correct horse", GivenName: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var admin = auth.Identity{Subject: "00000000-0000-4000-8000-00000000000a", Roles: []string{auth.RoleAdmin}}

func self(u user.User) auth.Identity { return auth.Identity{Subject: u.ID, Roles: u.Roles} }

func TestSignUpAndLogin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := newService(t)
	ada := signUp(t, svc, "ada")
	if ada.Email != "ada@example.com" || ada.Username != "ada" || ada.Status != user.StatusActive || ada.PasswordHash == "correct horse" {
		t.Fatalf("stored account = %+v", ada)
	}
	if _, err := svc.Create(ctx, user.NewUser{Email: "ADA@example.com", Username: "other", Password: "correct horse", GivenName: "A"}); !errors.Is(err, user.ErrEmailTaken) {
		t.Errorf("duplicate email, case aside: %v", err)
	}

	token, exp, who, err := svc.Login(ctx, user.Lookup{Username: "ADA"}, "correct horse")
	if err != nil || token == "" || exp.IsZero() || who.ID != ada.ID {
		t.Fatalf("Login = %q, %v, %v", token, who.ID, err)
	}
	for name, try := range map[string]struct {
		l  user.Lookup
		pw string
	}{
		"wrong password": {user.Lookup{Email: "ada@example.com"}, "wrong horse"},
		"unknown user":   {user.Lookup{Username: "nobody"}, "correct horse"},
	} {
		if _, _, _, err := svc.Login(ctx, try.l, try.pw); !errors.Is(err, user.ErrBadCredentials) {
			t.Errorf("%s: Login = %v, want ErrBadCredentials", name, err)
		}
	}
	if _, err := svc.Delete(ctx, self(ada), ada.ID, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := svc.Login(ctx, user.Lookup{Username: "ada"}, "correct horse"); !errors.Is(err, user.ErrBadCredentials) {
		t.Errorf("a deleted user logged in: %v", err)
	}
}

func TestReadAndChangePermissions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := newService(t)
	ada, bob := signUp(t, svc, "ada"), signUp(t, svc, "bob")

	if _, err := svc.Get(ctx, self(ada), user.Lookup{ID: ada.ID}); err != nil {
		t.Errorf("reading oneself: %v", err)
	}
	if _, err := svc.Get(ctx, self(ada), user.Lookup{Username: "bob"}); !errors.Is(err, user.ErrNotFound) {
		t.Errorf("reading someone else = %v, want ErrNotFound, as for a missing account", err)
	}
	if _, err := svc.Get(ctx, admin, user.Lookup{Email: "BOB@example.com"}); err != nil {
		t.Errorf("an admin reading anyone: %v", err)
	}
	if _, err := svc.Update(ctx, self(ada), bob.ID, "", user.Patch{Paths: []string{"given_name"}, GivenName: "X"}); !errors.Is(err, user.ErrNotFound) {
		t.Errorf("changing someone else = %v", err)
	}
	// Nobody changes roles through Update, an admin no more than a user: an invalid argument
	// naming the roles field.
	for _, who := range []auth.Identity{self(ada), admin} {
		_, err := svc.Update(ctx, who, ada.ID, "", user.Patch{Paths: []string{"given_name", "roles"}, GivenName: "Eve"})
		var fe *fault.Error
		if !errors.Is(err, user.ErrRolesReadOnly) || !errors.As(err, &fe) || fe.Code != fault.InvalidArgument || fe.Field != "user.roles" {
			t.Errorf("%v changing roles = %v, want an invalid argument on user.roles", who.Roles, err)
		}
	}
	if got, _ := svc.Get(ctx, admin, user.Lookup{ID: ada.ID}); got.GivenName != "Ada" || got.Version != ada.Version {
		t.Errorf("a refused roles update changed the account: %+v", got)
	}
	if _, err := svc.Update(ctx, admin, ada.ID, "", user.Patch{Paths: []string{"status"}, Status: user.StatusDeleted}); err == nil {
		t.Errorf("status DELETED through Update was accepted")
	}
	up, err := svc.Update(ctx, admin, bob.ID, "", user.Patch{Paths: []string{"status", "given_name"}, Status: user.StatusSuspended, GivenName: " Robert "})
	if err != nil || up.Status != user.StatusSuspended || up.GivenName != "Robert" || up.Version != bob.Version+1 {
		t.Errorf("admin update = %+v, %v", up, err)
	}
}

func TestEtags(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := newService(t)
	ada := signUp(t, svc, "ada")
	first, err := svc.Update(ctx, self(ada), ada.ID, ada.Etag(), user.Patch{Paths: []string{"family_name"}, FamilyName: "Lovelace"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Update(ctx, self(ada), ada.ID, ada.Etag(), user.Patch{Paths: []string{"family_name"}, FamilyName: "Byron"}); !errors.Is(err, user.ErrStale) {
		t.Errorf("update with an old etag = %v, want ErrStale", err)
	}
	if _, err := svc.Delete(ctx, self(ada), ada.ID, ada.Etag()); !errors.Is(err, user.ErrStale) {
		t.Errorf("delete with an old etag = %v, want ErrStale", err)
	}
	if _, err := svc.Delete(ctx, self(ada), ada.ID, first.Etag()); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Get(ctx, admin, user.Lookup{ID: ada.ID}); !errors.Is(err, user.ErrNotFound) {
		t.Errorf("a deleted user = %v, want ErrNotFound", err)
	}
	if _, err := svc.Delete(ctx, self(ada), ada.ID, ""); !errors.Is(err, user.ErrNotFound) {
		t.Errorf("deleting twice = %v, want ErrNotFound", err)
	}
}

func TestListPagesAndTokens(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := newService(t)
	var want []string
	for i := range 7 {
		want = append(want, signUp(t, svc, fmt.Sprintf("user%d", i)).ID)
	}
	var got []string
	token := ""
	for pages := 0; ; pages++ {
		page, next, err := svc.List(ctx, user.Filter{}, 3, token)
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range page {
			got = append(got, u.ID)
		}
		if next == "" {
			if pages != 2 {
				t.Errorf("7 users in pages of 3 took %d pages", pages+1)
			}
			break
		}
		token = next
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pages = %v, want %v", got, want)
	}
	_, next, err := svc.List(ctx, user.Filter{}, 3, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.List(ctx, user.Filter{Status: user.StatusSuspended}, 3, next); !errors.Is(err, paging.ErrInvalidToken) {
		t.Errorf("a token reused with another filter = %v, want paging.ErrInvalidToken", err)
	}
	forged := next[:len(next)-2] + "AA"
	if _, _, err := svc.List(ctx, user.Filter{}, 3, forged); !errors.Is(err, paging.ErrInvalidToken) {
		t.Errorf("a forged token = %v, want paging.ErrInvalidToken", err)
	}
}

func TestExportAndImport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := newService(t)
	results, err := svc.Import(ctx, []user.NewUser{
		{Email: "a@example.com", Username: "a1", Password: "password1", GivenName: "A"},
		{Email: "a@example.com", Username: "a2", Password: "password2", GivenName: "A"}, // duplicate email
		{Email: "b@example.com", Username: "b1", Password: "short", GivenName: "B"},     // bad password
		{Email: "c@example.com", Username: "c1", Password: "password3", GivenName: "C"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].Err != nil || !errors.Is(results[1].Err, user.ErrEmailTaken) || fault.CodeOf(results[2].Err) != fault.InvalidArgument || results[3].Err != nil {
		t.Fatalf("import results = %+v", results)
	}
	// Import takes no roles: whatever an admin imports is a plain user.
	for _, r := range []user.ImportResult{results[0], results[3]} {
		if fmt.Sprint(r.User.Roles) != "[user]" {
			t.Errorf("imported %s with roles %v, want [user]", r.User.Email, r.User.Roles)
		}
	}

	var exported []string
	if err := svc.Export(ctx, user.Filter{}, func(u user.User) error { exported = append(exported, u.Username); return nil }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(exported) != "[a1 c1]" {
		t.Errorf("exported %v", exported)
	}
	stop := errors.New("client went away")
	if err := svc.Export(ctx, user.Filter{}, func(user.User) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("Export did not stop at the first send error: %v", err)
	}
}

func TestPasswordHash(t *testing.T) {
	t.Parallel()
	h, err := user.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	h2, _ := user.HashPassword("correct horse")
	if h == h2 || !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("hashes %q and %q: want salted argon2id", h, h2)
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horsE": false, "": false} {
		if ok, err := user.CheckPassword(h, pw); ok != want || err != nil {
			t.Errorf("CheckPassword(%q) = %v, %v", pw, ok, err)
		}
	}
}
