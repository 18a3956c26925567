// Command user runs the user service: accounts, sign-up, login and access tokens.
//
// With no configuration it runs on its own: an embedded SQLite file (data/user.sqlite) and a signing
// key made up at start (tokens then die with the process). In production give it a PostgreSQL
// DATABASE_URL and the signing key file every replica shares; docs/configuration.md lists every
// setting. No setting makes an admin: `user admin -email E` does, on the database (admin.go).
package main

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/sqldb"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/user/internal/grpcapi"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
	"github.com/meshmart/meshmart/services/user/migrations"
)

func main() {
	c := defaults()
	os.Exit(app.Main(app.Service{Name: "user", GRPCAddr: ":50051", Settings: c, Start: c.start,
		Migrate: c.migrate, OwnVerifier: true, Commands: []app.Command{
			{Name: "keygen", Run: keygen},
			{Name: "admin", Run: func(ctx context.Context, args []string) error { return admin(ctx, args, os.Getenv, os.Stdout) }},
		}}))
}

// keygen is `user keygen [-dir D]`: it makes sure D holds the key pair every replica shares,
// for deployments that make their development keys with the image itself (the compose stack).
func keygen(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	dir := fs.String("dir", "data/keys", "directory for auth.key.pem and auth.pub.pem; an existing pair is kept")
	if err := fs.Parse(args); err != nil {
		return err
	}
	created, err := auth.WriteKeyPair(*dir)
	if err != nil {
		return err
	}
	fmt.Printf("key pair in %s (new: %v)\n", *dir, created)
	return nil
}

// settings are the user service's own, beside the chassis' server.Config. The keys are file
// paths, not the keys themselves, so they are not secret.
type settings struct {
	Database   string        `flag:"database" env:"DATABASE_URL" usage:"SQLite file path (data/user.sqlite when unset; its directory is created), or a postgres:// URL" secret:"true"`
	SigningKey string        `flag:"signing-key" env:"MESHMART_SIGNING_KEY" usage:"PEM Ed25519 private key signing access tokens, shared by every replica; empty makes one up, whose tokens die with the process"`
	ExtraKeys  []string      `flag:"extra-keys" env:"MESHMART_EXTRA_KEYS" usage:"comma-separated PEM Ed25519 key files (private or public) published and accepted beside the signing key, never signing: the next key before a rotation, the previous one until its tokens expire"`
	TokenTTL   time.Duration `flag:"token-ttl" env:"MESHMART_TOKEN_TTL" usage:"access token lifetime: the longest a deleted, suspended or logged-out account keeps access, since an access token cannot be recalled"`
	RefreshTTL time.Duration `flag:"refresh-token-ttl" env:"MESHMART_REFRESH_TOKEN_TTL" usage:"refresh token lifetime; each refresh issues a new one, so a session unused for this long ends"`
	// ImportMaxItems bounds one ImportUsers stream, whose valid items are held until it ends.
	ImportMaxItems int `flag:"import-max-items" env:"MESHMART_IMPORT_MAX_ITEMS" usage:"most items one ImportUsers stream may carry; over it the import fails and creates nothing"`

	// The login guards (internal/user/login.go; README, "Limits").
	LoginHashConcurrency     int           `flag:"login-hash-concurrency" env:"MESHMART_LOGIN_HASH_CONCURRENCY" usage:"password hashes (login, sign-up) running at once; more wait at most 1 s, two per slot, or fail with RESOURCE_EXHAUSTED; 0 means half of GOMAXPROCS"`
	LoginFreeFailures        int           `flag:"login-free-failures" env:"MESHMART_LOGIN_FREE_FAILURES" usage:"failed logins per account before it backs off (kept in the database)"`
	LoginAddressFreeFailures int           `flag:"login-address-free-failures" env:"MESHMART_LOGIN_ADDRESS_FREE_FAILURES" usage:"failed logins per client address before it backs off (kept in each replica's memory)"`
	LoginBackoffBase         time.Duration `flag:"login-backoff-base" env:"MESHMART_LOGIN_BACKOFF_BASE" usage:"first wait after the free failures, doubling with every further failure"`
	LoginBackoffMax          time.Duration `flag:"login-backoff-max" env:"MESHMART_LOGIN_BACKOFF_MAX" usage:"longest wait after failed logins"`
}

func defaults() *settings {
	l := user.DefaultLoginLimits
	return &settings{Database: "data/user.sqlite", TokenTTL: 5 * time.Minute, RefreshTTL: user.DefaultRefreshTTL,
		ImportMaxItems:    grpcapi.DefaultImportMaxItems,
		LoginFreeFailures: l.Account.Free, LoginAddressFreeFailures: l.Address.Free,
		LoginBackoffBase: l.Account.Base, LoginBackoffMax: l.Account.Max}
}

// migrate applies the user service's migrations to -database (`user migrate`).
func (c *settings) migrate(ctx context.Context) ([]string, error) {
	return sqldb.MigrateDatabase(ctx, c.Database, migrations.FS)
}

func (c *settings) loginLimits() user.LoginLimits {
	l := user.DefaultLoginLimits
	l.HashConcurrency = c.LoginHashConcurrency
	l.Account.Free, l.Address.Free = c.LoginFreeFailures, c.LoginAddressFreeFailures
	l.Account.Base, l.Address.Base = c.LoginBackoffBase, c.LoginBackoffBase
	l.Account.Max, l.Address.Max = c.LoginBackoffMax, c.LoginBackoffMax
	return l
}

func (c *settings) start(ctx context.Context, s *app.Setup) error {
	key, err := signingKey(c.SigningKey, s.Log)
	if err != nil {
		return err
	}
	issuer, err := auth.NewIssuer(key, c.TokenTTL, s.Config.AuthOptions()...)
	if err != nil {
		return err
	}
	extra := make([]ed25519.PublicKey, 0, len(c.ExtraKeys))
	for _, path := range c.ExtraKeys {
		k, err := auth.LoadVerificationKey(path)
		if err != nil {
			return fmt.Errorf("-extra-keys: %w", err)
		}
		extra = append(extra, k)
	}
	users, err := store.Open(ctx, c.Database)
	if err != nil {
		return err
	}
	s.Defer("database", users.Close)
	if err := s.ObserveDB(users.DB.DB); err != nil {
		return err
	}
	svc, err := user.NewService(users, issuer, user.WithPublishedKeys(extra...), user.WithRefreshTTL(c.RefreshTTL),
		user.WithLoginLimits(c.loginLimits()), user.WithClientAddress(s.Config.ClientAddress()))
	if err != nil {
		return err
	}
	api, err := grpcapi.New(svc, s.Log, grpcapi.WithImportMaxItems(c.ImportMaxItems))
	if err != nil {
		return err
	}
	// The service verifies its own tokens with the keys it publishes, so that a token it accepts
	// is one every other service accepts too.
	keys := svc.TokenKeys()
	verifier, err := auth.NewVerifier(keys.Keys, s.Config.AuthOptions()...)
	if err != nil {
		return err
	}
	s.Log.Info("user service starting", "database", sqldb.Describe(c.Database), "token_ttl", c.TokenTTL.String(),
		"refresh_token_ttl", c.RefreshTTL.String(),
		"signing_kid", issuer.KeyID(), "kids", verifier.KeyIDs())
	return s.Serve(&userv1.UserService_ServiceDesc, api, server.WithVerifier(verifier))
}

func signingKey(path string, log *slog.Logger) (ed25519.PrivateKey, error) {
	if path != "" {
		return auth.LoadPrivateKey(path)
	}
	log.Warn("no signing key configured: using one made up for this process; its tokens die with it " +
		"and other services cannot verify them (see -signing-key)")
	_, key, err := ed25519.GenerateKey(nil)
	return key, err
}
