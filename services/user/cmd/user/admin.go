package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// adminSettings are what `user admin` shares with the service: where the database is.
type adminSettings struct {
	Database string `flag:"database" env:"DATABASE_URL" usage:"SQLite file path (data/user.sqlite when unset; its directory is created), or a postgres:// URL" secret:"true"`
}

// admin is `user admin -email E [-username U] [-password-file F]`: run by an operator against the
// service's database (the same -database / DATABASE_URL, migrations applied as the service does),
// it makes sure an active account with email E exists, holds the admin role and has the password
// in F (its first line), or a new random one without F, and prints the credentials to out. It is
// the only way to make an admin, and safe to run at every start.
func admin(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	fs := flag.NewFlagSet("admin", flag.ContinueOnError)
	c := &adminSettings{Database: defaults().Database}
	if _, err := app.Bind(fs, getenv, c); err != nil {
		return err
	}
	email := fs.String("email", "", "the admin's email (required)")
	username := fs.String("username", "", "the admin's username; default: the email's local part for a new account, unchanged for an existing one")
	passwordFile := fs.String("password-file", "", "file whose first line is the admin's password; empty generates a random one")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *email == "" {
		return errors.New("-email is required")
	}
	password := user.NewPassword()
	if *passwordFile != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fmt.Errorf("read the password: %w", err)
		}
		password, _, _ = strings.Cut(string(b), "\n")
		password = strings.TrimRight(password, "\r")
	}
	users, err := store.Open(ctx, c.Database)
	if err != nil {
		return fmt.Errorf("open %s: %w", sqldb.Describe(c.Database), err)
	}
	defer users.Close()
	issuer, err := throwawayIssuer()
	if err != nil {
		return err
	}
	svc, err := user.NewService(users, issuer)
	if err != nil {
		return err
	}
	u, created, err := svc.EnsureAdmin(ctx, user.Admin{Email: *email, Username: *username, Password: password})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "email: %s\nusername: %s\npassword: %s\nnew: %v\n", u.Email, u.Username, password, created)
	return nil
}

// throwawayIssuer is an issuer with a key made up for this process: `user admin` issues no
// token, so it needs no real key.
func throwawayIssuer() (*auth.Issuer, error) {
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	return auth.NewIssuer(key, time.Minute)
}
