package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// credentials parses what `user admin` prints.
func credentials(t *testing.T, out string) map[string]string {
	t.Helper()
	got := map[string]string{}
	for line := range strings.Lines(out) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if ok {
			got[k] = v
		}
	}
	if got["email"] == "" || got["username"] == "" || got["password"] == "" {
		t.Fatalf("user admin printed %q, want email, username and password", out)
	}
	return got
}

// TestAdminCommand runs `user admin` against a SQLite file given by DATABASE_URL, as the
// launcher does: without a password file it makes one up; with one it sets it; run again it
// changes nothing; the account is an active admin whose password logs in.
func TestAdminCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := testkit.SQLitePath(t)
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return db
		}
		return ""
	}
	run := func(args ...string) map[string]string {
		t.Helper()
		var out bytes.Buffer
		if err := admin(ctx, args, env, &out); err != nil {
			t.Fatalf("user admin %v: %v", args, err)
		}
		return credentials(t, out.String())
	}

	first := run("-email", "Root@Example.com")
	if first["email"] != "root@example.com" || first["username"] != "root" || len(first["password"]) < 20 || first["new"] != "true" {
		t.Errorf("first run printed %v", first)
	}
	pwFile := filepath.Join(t.TempDir(), "admin-password")
	if err := os.WriteFile(pwFile, []byte("chosen password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	second := run("-email", "root@example.com", "-username", "boss", "-password-file", pwFile)
	third := run("-email", "root@example.com", "-password-file", pwFile)
	if second["password"] != "chosen password" || second["username"] != "boss" || second["new"] != "false" || third["username"] != "boss" {
		t.Errorf("runs with a password file printed %v, then %v", second, third)
	}

	users, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer users.Close()
	u, err := users.Get(ctx, user.Lookup{Email: "root@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	// Version 2: created, then changed once (username and password); the third run wrote nothing.
	if ok, _ := user.CheckPassword(u.PasswordHash, "chosen password"); !ok || !slices.Contains(u.Roles, user.RoleAdmin) ||
		u.Status != user.StatusActive || u.Version != 2 {
		t.Errorf("stored admin = %+v (password matches: %v)", u, ok)
	}

	var out bytes.Buffer
	if err := admin(ctx, nil, env, &out); err == nil {
		t.Error("user admin without -email succeeded")
	}
	if err := admin(ctx, []string{"-email", "x@example.com", "-password-file", filepath.Join(t.TempDir(), "missing")}, env, &out); err == nil {
		t.Error("user admin with a missing password file succeeded")
	}
}
