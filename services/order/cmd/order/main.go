// Command order runs the order service: a product catalog (CatalogService), orders priced from it and paid through the payment service, found with the
// user and payment services through Consul, settled by a reconciler when a failure leaves them
// unknown, cancelled with refunds, and tracked as they change.
//
// It needs where the user service publishes the keys that verify access tokens
// (-auth-keys-target; or one key file, -auth-public-key); docs/configuration.md lists every
// setting. It has no account of its own at the user service: on a user's behalf it forwards the
// user's token, and for its own work (the reconciler) it calls as itself, proved by its
// certificate (mutual TLS).
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/sqldb"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/order/internal/grpcapi"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/remote"
	"github.com/meshmart/meshmart/services/order/internal/store"
	"github.com/meshmart/meshmart/services/order/migrations"
)

// settings are the order service's own, beside the chassis' server.Config.
type settings struct {
	Database       string        `flag:"database" env:"DATABASE_URL" usage:"SQLite file path (data/order.sqlite when unset; its directory is created), or a postgres:// URL" secret:"true"`
	UserTarget     string        `flag:"user-target" env:"MESHMART_USER_TARGET" usage:"where the user service is"`
	PaymentTarget  string        `flag:"payment-target" env:"MESHMART_PAYMENT_TARGET" usage:"where the payment service is"`
	ReconcileEvery time.Duration `flag:"reconcile-interval" env:"MESHMART_RECONCILE_INTERVAL" usage:"how often the reconciler looks for unsettled orders"`
	ReconcileGrace time.Duration `flag:"reconcile-grace" env:"MESHMART_RECONCILE_GRACE" usage:"how long an order may stay unsettled before the reconciler takes it"`
	TrackInterval  time.Duration `flag:"track-interval" env:"MESHMART_TRACK_INTERVAL" usage:"how often TrackOrders streams look for updates"`
	Lease          time.Duration `flag:"settle-lease" env:"MESHMART_SETTLE_LEASE" usage:"how long one replica may hold an order while settling it"`

	// The reconciler's bounds beside its interval and grace (order.ReconcilePolicy).
	ReconcileLimit       int           `flag:"reconcile-limit" env:"MESHMART_RECONCILE_LIMIT" usage:"the most orders one reconciler pass takes"`
	ReconcilePerUser     int           `flag:"reconcile-per-user" env:"MESHMART_RECONCILE_PER_USER" usage:"the most orders of one user one reconciler pass takes"`
	ReconcileWorkers     int           `flag:"reconcile-workers" env:"MESHMART_RECONCILE_WORKERS" usage:"how many orders a reconciler pass attempts at once"`
	ReconcileBackoff     time.Duration `flag:"reconcile-backoff" env:"MESHMART_RECONCILE_BACKOFF" usage:"the largest delay before retrying an order after its first failed attempt; doubled at each failure, drawn uniformly below it"`
	ReconcileMaxBackoff  time.Duration `flag:"reconcile-max-backoff" env:"MESHMART_RECONCILE_MAX_BACKOFF" usage:"the cap on the reconciler's backoff"`
	ReconcileMaxAttempts int           `flag:"reconcile-max-attempts" env:"MESHMART_RECONCILE_MAX_ATTEMPTS" usage:"failed attempts after which a pending order is given up (PAYMENT_FAILED)"`
	ReconcileMaxAge      time.Duration `flag:"reconcile-max-age" env:"MESHMART_RECONCILE_MAX_AGE" usage:"age after which a pending order that fails an attempt is given up (PAYMENT_FAILED)"`
	TrackMaxOrders       int           `flag:"track-max-orders" env:"MESHMART_TRACK_MAX_ORDERS" usage:"most orders one TrackOrders stream may be subscribed to at once"`
	TrackRate            float64       `flag:"track-rate" env:"MESHMART_TRACK_RATE" usage:"subscription changes per second one TrackOrders stream may send"`
	TrackBurst           int           `flag:"track-burst" env:"MESHMART_TRACK_BURST" usage:"burst of subscription changes above -track-rate"`
	FollowEvery          time.Duration `flag:"payment-follow-interval" env:"MESHMART_PAYMENT_FOLLOW_INTERVAL" usage:"how often the order service reads the payment service's events, to follow refunds made there"`
	CatalogSeed          string        `flag:"catalog-seed" env:"MESHMART_CATALOG_SEED" usage:"JSON file of products added to the catalog at start-up when their SKU is missing (services/order/catalog.json is the demo catalog); empty adds none"`
}

// reconcilePolicy is the reconciler's policy the settings describe.
func (c *settings) reconcilePolicy() order.ReconcilePolicy {
	return order.ReconcilePolicy{Grace: c.ReconcileGrace, Limit: c.ReconcileLimit, PerUser: c.ReconcilePerUser,
		Workers: c.ReconcileWorkers, Backoff: c.ReconcileBackoff, MaxBackoff: c.ReconcileMaxBackoff,
		MaxAttempts: c.ReconcileMaxAttempts, MaxAge: c.ReconcileMaxAge}
}

func defaults() *settings {
	p := order.DefaultReconcilePolicy()
	return &settings{
		ReconcileLimit:       p.Limit,
		ReconcilePerUser:     p.PerUser,
		ReconcileWorkers:     p.Workers,
		ReconcileBackoff:     p.Backoff,
		ReconcileMaxBackoff:  p.MaxBackoff,
		ReconcileMaxAttempts: p.MaxAttempts,
		ReconcileMaxAge:      p.MaxAge,
		Database:             "data/order.sqlite",
		UserTarget:           "consul://127.0.0.1:8500/user",
		PaymentTarget:        "consul://127.0.0.1:8500/payment",
		ReconcileEvery:       5 * time.Second,
		ReconcileGrace:       p.Grace,
		TrackInterval:        200 * time.Millisecond,
		Lease:                30 * time.Second,
		FollowEvery:          time.Second,
		TrackMaxOrders:       100,
		TrackRate:            10,
		TrackBurst:           20,
	}
}

// migrate applies the order service's migrations to -database (`order migrate`).
func (c *settings) migrate(ctx context.Context) ([]string, error) {
	return sqldb.MigrateDatabase(ctx, c.Database, migrations.FS)
}

func main() {
	c := defaults()
	os.Exit(app.Main(app.Service{Name: "order", GRPCAddr: ":50052", Settings: c, Start: c.start, Migrate: c.migrate}))
}

func (c *settings) start(ctx context.Context, s *app.Setup) error {
	if c.ReconcileEvery <= 0 {
		return errors.New("-reconcile-interval must be positive")
	}
	// The service's own metrics join the chassis' on its /metrics.
	metrics, err := newReconcileMetrics(s.Registry)
	if err != nil {
		return err
	}
	orders, err := store.Open(ctx, c.Database)
	if err != nil {
		return err
	}
	s.Defer("database", orders.Close)
	if err := s.ObserveDB(orders.DB.DB); err != nil {
		return err
	}
	// Mutual TLS with the order service's own identity: user and payment see the verified caller
	// "order", and only instances that prove to be user and payment are ever called.
	userConn, err := s.Dial(c.UserTarget, client.WithServer("user"))
	if err != nil {
		return err
	}
	paymentConn, err := s.Dial(c.PaymentTarget, client.WithServer("payment"))
	if err != nil {
		return err
	}
	catalog := order.NewCatalog(orders, orders.PageKey)
	if c.CatalogSeed != "" {
		n, err := seedCatalog(ctx, catalog, c.CatalogSeed)
		if err != nil {
			return err
		}
		s.Log.Info("catalog seeded", "file", c.CatalogSeed, "added", n)
	}
	users := remote.NewUsers(userv1.NewUserServiceClient(userConn))
	svc := order.NewService(orders, users, remote.NewPayments(paymentv1.NewPaymentServiceClient(paymentConn)), c.Lease)
	svc.ObserveStatuses(metrics)
	reconciler, err := order.NewReconciler(svc, c.reconcilePolicy(), s.Log, metrics)
	if err != nil {
		return err
	}
	s.Go("reconciler", func(ctx context.Context) error { reconciler.Run(ctx, c.ReconcileEvery); return nil })
	s.Go("payment follower", func(ctx context.Context) error { c.followPayments(ctx, svc, s.Log); return nil })
	s.Log.Info("order service starting", "database", sqldb.Describe(c.Database), "user_target", c.UserTarget,
		"payment_target", c.PaymentTarget)
	return s.Serve(&orderv1.OrderService_ServiceDesc, grpcapi.New(svc, s.Log, c.TrackInterval,
		grpcapi.WithTrackLimits(grpcapi.TrackLimits{MaxOrders: c.TrackMaxOrders, Rate: c.TrackRate, Burst: c.TrackBurst})),
		server.WithService(&orderv1.CatalogService_ServiceDesc, grpcapi.NewCatalog(catalog, s.Log)))
}

// followPayments follows the payment service's event log every interval until ctx ends, reading
// on at once while it finds full pages, so that an order whose payment was refunded at the
// payment service (an admin's RefundPayment) is cancelled within about one interval.
func (c *settings) followPayments(ctx context.Context, svc *order.Service, log *slog.Logger) {
	const page = 200
	t := time.NewTicker(c.FollowEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			n, err := svc.FollowPayments(ctx, page)
			if err != nil && ctx.Err() == nil {
				log.Warn("following payment events failed", "error", err)
			}
			if err != nil || n < page {
				break
			}
		}
	}
}
