// Command order runs the order service: orders paid through the payment service, found with the
// user and payment services through Consul, settled by a reconciler when a failure leaves them
// unknown, cancelled with refunds, and tracked as they change.
//
// It needs the public key that verifies access tokens (-auth-public-key) and the service
// account's password (-service-password); see the README.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/sqldb"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/order/internal/grpcapi"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/remote"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

// grpcAddr is where the service listens by default.
const grpcAddr = ":50052"

func main() {
	server.HandleProbe("order", grpcAddr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv); err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}

// config is the order service's own settings, beside the chassis' server.Config.
type config struct {
	database, userTarget, paymentTarget   string
	serviceEmail, serviceUser, servicePwd string
	reconcileEvery, reconcileGrace        time.Duration
	trackInterval, lease                  time.Duration
}

func run(ctx context.Context, args []string, getenv func(string) string) error {
	cfg := server.DefaultConfig(grpcAddr)
	fs := flag.NewFlagSet("order", flag.ContinueOnError)
	if err := cfg.RegisterFlags(fs, getenv); err != nil {
		return err
	}
	or := func(env, def string) string {
		if v := getenv(env); v != "" {
			return v
		}
		return def
	}
	oc := config{}
	fs.StringVar(&oc.database, "database", or("DATABASE_URL", "data/order.sqlite"), "SQLite file path, or a postgres:// URL (env DATABASE_URL)")
	fs.StringVar(&oc.userTarget, "user-target", or("MESHMART_USER_TARGET", "consul://127.0.0.1:8500/user"), "where the user service is (env MESHMART_USER_TARGET)")
	fs.StringVar(&oc.paymentTarget, "payment-target", or("MESHMART_PAYMENT_TARGET", "consul://127.0.0.1:8500/payment"), "where the payment service is (env MESHMART_PAYMENT_TARGET)")
	fs.StringVar(&oc.serviceEmail, "service-email", or("MESHMART_SERVICE_EMAIL", "order-service@meshmart.internal"), "the service account's email; list it in the user service's MESHMART_ADMIN_EMAILS (env MESHMART_SERVICE_EMAIL)")
	fs.StringVar(&oc.serviceUser, "service-username", or("MESHMART_SERVICE_USERNAME", "order-service"), "the service account's username (env MESHMART_SERVICE_USERNAME)")
	fs.StringVar(&oc.servicePwd, "service-password", getenv("MESHMART_SERVICE_PASSWORD"), "the service account's password (env MESHMART_SERVICE_PASSWORD); required")
	durations := []struct {
		p         *time.Duration
		flag, env string
		def       time.Duration
		usage     string
	}{
		{&oc.reconcileEvery, "reconcile-interval", "MESHMART_RECONCILE_INTERVAL", 5 * time.Second, "how often the reconciler looks for unsettled orders"},
		{&oc.reconcileGrace, "reconcile-grace", "MESHMART_RECONCILE_GRACE", 5 * time.Second, "how long an order may stay unsettled before the reconciler takes it"},
		{&oc.trackInterval, "track-interval", "MESHMART_TRACK_INTERVAL", 200 * time.Millisecond, "how often TrackOrders streams look for updates"},
		{&oc.lease, "settle-lease", "MESHMART_SETTLE_LEASE", 30 * time.Second, "how long one replica may hold an order while settling it"},
	}
	for _, d := range durations {
		v := d.def
		if s := getenv(d.env); s != "" {
			parsed, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("%s=%q: %w", d.env, s, err)
			}
			v = parsed
		}
		fs.DurationVar(d.p, d.flag, v, fmt.Sprintf("%s (env %s)", d.usage, d.env))
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.AuthPublicKey == "" {
		return errors.New("-auth-public-key (MESHMART_AUTH_PUBLIC_KEY) is required: every call acts for a signed-in user")
	}
	if oc.servicePwd == "" {
		return errors.New("-service-password (MESHMART_SERVICE_PASSWORD) is required: the reconciler acts through a service account")
	}
	log, err := observability.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	tp, shutdownTracing, err := observability.NewTracerProvider(ctx, "order", observability.BuildVersion())
	if err != nil {
		return err
	}
	defer shutdownTracing()

	orders, err := store.Open(ctx, oc.database)
	if err != nil {
		return err
	}
	defer orders.Close()
	userConn, err := client.Dial(oc.userTarget, log, client.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	defer userConn.Close()
	paymentConn, err := client.Dial(oc.paymentTarget, log, client.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	defer paymentConn.Close()
	users := userv1.NewUserServiceClient(userConn)
	account := remote.NewServiceAccount(users, oc.serviceEmail, oc.serviceUser, oc.servicePwd)
	svc := order.NewService(orders, remote.NewUsers(users), remote.NewPayments(paymentv1.NewPaymentServiceClient(paymentConn), account), oc.lease)

	srv, err := server.New("order", cfg, log, server.WithTracerProvider(tp))
	if err != nil {
		return err
	}
	srv.RegisterService(&orderv1.OrderService_ServiceDesc, grpcapi.New(svc, log, oc.trackInterval))
	log.Info("order service starting", "database", sqldb.Describe(oc.database), "user_target", oc.userTarget,
		"payment_target", oc.paymentTarget, "service_account", oc.serviceEmail)

	reconciled := make(chan struct{})
	go func() { defer close(reconciled); reconcile(ctx, svc, oc, log) }()
	err = srv.Run(ctx)
	<-reconciled
	return err
}

// reconcile settles unsettled orders every interval until ctx ends.
func reconcile(ctx context.Context, svc *order.Service, oc config, log *slog.Logger) {
	t := time.NewTicker(oc.reconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := svc.Reconcile(ctx, oc.reconcileGrace, 50)
		if err != nil && ctx.Err() == nil {
			log.Warn("reconcile pass failed", "error", err)
		}
		if n > 0 {
			log.Info("reconciled orders", "settled", n)
		}
	}
}
