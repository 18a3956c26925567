package app

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
)

// MigrateCommand is the subcommand of a service with Service.Migrate:
// `<service> migrate [flags]` applies the service's schema migrations to the database the same
// flags and environment name (-database, DATABASE_URL or DATABASE_URL_FILE), logs which it
// applied, and exits 0 without starting the server. A Helm pre-install/pre-upgrade Job runs it,
// so that a release's replicas never race over a migration; they still migrate at start, and find
// nothing to do. Run twice, it applies nothing the second time; run concurrently, the runs take
// the store's migration lock in turn (pkg/sqldb.Migrate).
const MigrateCommand = "migrate"

// migrate runs MigrateCommand for svc. It takes the chassis' settings and the service's own, as
// the service does, so that a Job can share the service's environment and arguments; only the
// service's own are logged, secrets masked.
func migrate(ctx context.Context, svc Service, args []string, getenv func(string) string) error {
	cfg := server.DefaultConfig(svc.GRPCAddr)
	fs := flag.NewFlagSet(svc.Name+" "+MigrateCommand, flag.ContinueOnError)
	if _, err := Bind(fs, getenv, &cfg); err != nil {
		return err
	}
	own := &Settings{}
	if svc.Settings != nil {
		var err error
		if own, err = Bind(fs, getenv, svc.Settings); err != nil {
			return err
		}
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := observability.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	log.Info("migrating", "service", svc.Name, "version", observability.BuildVersion(), "settings", own)
	start := time.Now()
	applied, err := svc.Migrate(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if applied == nil {
		applied = []string{} // logged as [], not null
	}
	log.Info("migrated", "service", svc.Name, "applied", applied, "took", time.Since(start).String())
	return nil
}
