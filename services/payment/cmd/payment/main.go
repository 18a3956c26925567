// Command payment runs the payment service: idempotent charges and refunds through a payment
// processor (the built-in deterministic simulator), and a stream of payment events.
//
// It needs the public key that verifies access tokens (-auth-public-key); with that alone it runs
// on an embedded SQLite file (data/payment.sqlite). In production give it a PostgreSQL
// DATABASE_URL shared by every replica; see the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/sqldb"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/grpcapi"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
	"github.com/meshmart/meshmart/services/payment/internal/store"
)

// grpcAddr is where the service listens by default.
const grpcAddr = ":50053"

func main() {
	server.HandleProbe("payment", grpcAddr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "payment:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg := server.DefaultConfig(grpcAddr)
	fs := flag.NewFlagSet("payment", flag.ContinueOnError)
	if err := cfg.RegisterFlags(fs, getenv); err != nil {
		return err
	}
	database := "data/payment.sqlite"
	if v := getenv("DATABASE_URL"); v != "" {
		database = v
	}
	durations := map[string]*time.Duration{}
	for _, d := range []struct {
		flag, env string
		def       time.Duration
		usage     string
	}{
		{"processor-timeout", "MESHMART_PROCESSOR_TIMEOUT", 2 * time.Second, "bound on one processor call; past it the payment stays PENDING"},
		{"processor-latency", "MESHMART_PROCESSOR_LATENCY", 0, "delay the simulated processor adds to every answer"},
		{"watch-interval", "MESHMART_WATCH_INTERVAL", 200 * time.Millisecond, "how often WatchPayments streams look for new events"},
	} {
		v := d.def
		if s := getenv(d.env); s != "" {
			parsed, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("%s=%q: %w", d.env, s, err)
			}
			v = parsed
		}
		durations[d.flag] = fs.Duration(d.flag, v, fmt.Sprintf("%s (env %s)", d.usage, d.env))
	}
	fs.StringVar(&database, "database", database, "SQLite file path, or a postgres:// URL (env DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.AuthPublicKey == "" {
		return errors.New("-auth-public-key (MESHMART_AUTH_PUBLIC_KEY) is required: every call acts for a signed-in user")
	}
	log, err := observability.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	payments, err := store.Open(ctx, database)
	if err != nil {
		return err
	}
	defer payments.Close()
	svc := payment.NewService(payments, payment.Simulator{Latency: *durations["processor-latency"]}, *durations["processor-timeout"])

	tp, shutdownTracing, err := observability.NewTracerProvider(ctx, "payment", observability.BuildVersion())
	if err != nil {
		return err
	}
	defer shutdownTracing()
	srv, err := server.New("payment", cfg, log, server.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	srv.RegisterService(&paymentv1.PaymentService_ServiceDesc, grpcapi.New(svc, log, *durations["watch-interval"]))
	log.Info("payment service starting", "database", sqldb.Describe(database),
		"processor", "simulator", "processor_timeout", durations["processor-timeout"].String())
	return srv.Run(ctx)
}
