// Command user runs the user service: accounts, sign-up, login and access tokens.
//
// With no configuration it runs on its own: an embedded SQLite file (data/user.sqlite) and a signing
// key made up at start (tokens then die with the process). In production give it a PostgreSQL
// DATABASE_URL and the signing key file every replica shares; see the README.
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/sqldb"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/user/internal/grpcapi"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// grpcAddr is where the service listens by default.
const grpcAddr = ":50051"

func main() {
	server.HandleProbe("user", grpcAddr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "keygen" {
		if err := keygen(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "user keygen:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "user:", err)
		os.Exit(1)
	}
}

// keygen is `user keygen [-dir D]`: it makes sure D holds the key pair every replica shares,
// for deployments that make their development keys with the image itself (the compose stack).
func keygen(args []string) error {
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

// config is the user service's own settings, beside the chassis' server.Config.
type config struct {
	database    string
	signingKey  string
	tokenTTL    time.Duration
	adminEmails string
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg := server.DefaultConfig(grpcAddr)
	fs := flag.NewFlagSet("user", flag.ContinueOnError)
	if err := cfg.RegisterFlags(fs, getenv); err != nil {
		return err
	}
	uc := config{database: "data/user.sqlite", tokenTTL: time.Hour}
	if v := getenv("DATABASE_URL"); v != "" {
		uc.database = v
	}
	if v := getenv("MESHMART_TOKEN_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("MESHMART_TOKEN_TTL=%q: %w", v, err)
		}
		uc.tokenTTL = d
	}
	fs.StringVar(&uc.database, "database", uc.database, "SQLite file path, or a postgres:// URL (env DATABASE_URL)")
	fs.StringVar(&uc.signingKey, "signing-key", getenv("MESHMART_SIGNING_KEY"), "PEM Ed25519 private key signing access tokens; empty makes one up (env MESHMART_SIGNING_KEY)")
	fs.DurationVar(&uc.tokenTTL, "token-ttl", uc.tokenTTL, "access token lifetime (env MESHMART_TOKEN_TTL)")
	fs.StringVar(&uc.adminEmails, "admin-emails", getenv("MESHMART_ADMIN_EMAILS"), "comma-separated emails that become admins when they sign up (env MESHMART_ADMIN_EMAILS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := observability.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}

	key, err := signingKey(uc.signingKey, log)
	if err != nil {
		return err
	}
	if cfg.AuthPublicKey == "" {
		// The service verifies its own tokens with the public half of its signing key.
		path, err := writePublicKey(key)
		if err != nil {
			return err
		}
		defer os.Remove(path)
		cfg.AuthPublicKey = path
	}
	issuer, err := auth.NewIssuer(key, cfg.AuthAudience, uc.tokenTTL)
	if err != nil {
		return err
	}

	users, err := store.Open(ctx, uc.database)
	if err != nil {
		return err
	}
	defer users.Close()
	svc, err := user.NewService(users, issuer, user.WithAdminEmails(strings.Split(uc.adminEmails, ",")...))
	if err != nil {
		return err
	}
	api, err := grpcapi.New(svc, log)
	if err != nil {
		return err
	}

	tp, shutdownTracing, err := observability.NewTracerProvider(ctx, "user", observability.BuildVersion())
	if err != nil {
		return err
	}
	defer shutdownTracing()
	srv, err := server.New("user", cfg, log, server.WithPublicMethods(grpcapi.PublicMethods...), server.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	srv.RegisterService(&userv1.UserService_ServiceDesc, api)
	log.Info("user service starting", "database", sqldb.Describe(uc.database), "token_ttl", uc.tokenTTL.String())
	return srv.Run(ctx)
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

func writePublicKey(key ed25519.PrivateKey) (string, error) {
	_, pubPEM, err := auth.EncodeKey(key)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp("", "meshmart-user-*.pub.pem")
	if err != nil {
		return "", err
	}
	defer f.Close()
	if _, err := f.Write(pubPEM); err != nil {
		return "", errors.Join(err, os.Remove(f.Name()))
	}
	return f.Name(), nil
}
