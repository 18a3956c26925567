// Command order runs the order service: orders paid through the payment service, found with the
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
	"log/slog"
	"os"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/sqldb"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/order/internal/grpcapi"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/remote"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

// settings are the order service's own, beside the chassis' server.Config.
type settings struct {
	Database       string        `flag:"database" env:"DATABASE_URL" usage:"SQLite file path (its directory is created), or a postgres:// URL"`
	UserTarget     string        `flag:"user-target" env:"MESHMART_USER_TARGET" usage:"where the user service is"`
	PaymentTarget  string        `flag:"payment-target" env:"MESHMART_PAYMENT_TARGET" usage:"where the payment service is"`
	ReconcileEvery time.Duration `flag:"reconcile-interval" env:"MESHMART_RECONCILE_INTERVAL" usage:"how often the reconciler looks for unsettled orders"`
	ReconcileGrace time.Duration `flag:"reconcile-grace" env:"MESHMART_RECONCILE_GRACE" usage:"how long an order may stay unsettled before the reconciler takes it"`
	TrackInterval  time.Duration `flag:"track-interval" env:"MESHMART_TRACK_INTERVAL" usage:"how often TrackOrders streams look for updates"`
	Lease          time.Duration `flag:"settle-lease" env:"MESHMART_SETTLE_LEASE" usage:"how long one replica may hold an order while settling it"`
	TrackMaxOrders int           `flag:"track-max-orders" env:"MESHMART_TRACK_MAX_ORDERS" usage:"most orders one TrackOrders stream may be subscribed to at once"`
	TrackRate      float64       `flag:"track-rate" env:"MESHMART_TRACK_RATE" usage:"subscription changes per second one TrackOrders stream may send"`
	TrackBurst     int           `flag:"track-burst" env:"MESHMART_TRACK_BURST" usage:"burst of subscription changes above -track-rate"`
}

func defaults() *settings {
	return &settings{
		Database:       "data/order.sqlite",
		UserTarget:     "consul://127.0.0.1:8500/user",
		PaymentTarget:  "consul://127.0.0.1:8500/payment",
		ReconcileEvery: 5 * time.Second,
		ReconcileGrace: 5 * time.Second,
		TrackInterval:  200 * time.Millisecond,
		Lease:          30 * time.Second,
		TrackMaxOrders: 100,
		TrackRate:      10,
		TrackBurst:     20,
	}
}

func main() {
	c := defaults()
	os.Exit(app.Main(app.Service{Name: "order", GRPCAddr: ":50052", Settings: c, Start: c.start}))
}

func (c *settings) start(ctx context.Context, s *app.Setup) error {
	orders, err := store.Open(ctx, c.Database)
	if err != nil {
		return err
	}
	s.Defer("database", orders.Close)
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
	users := remote.NewUsers(userv1.NewUserServiceClient(userConn))
	svc := order.NewService(orders, users, remote.NewPayments(paymentv1.NewPaymentServiceClient(paymentConn)), c.Lease)
	s.Go("reconciler", func(ctx context.Context) error { c.reconcile(ctx, svc, s.Log); return nil })
	s.Log.Info("order service starting", "database", sqldb.Describe(c.Database), "user_target", c.UserTarget,
		"payment_target", c.PaymentTarget)
	return s.Serve(&orderv1.OrderService_ServiceDesc, grpcapi.New(svc, s.Log, c.TrackInterval,
		grpcapi.WithTrackLimits(grpcapi.TrackLimits{MaxOrders: c.TrackMaxOrders, Rate: c.TrackRate, Burst: c.TrackBurst})))
}

// reconcile settles unsettled orders every interval until ctx ends.
func (c *settings) reconcile(ctx context.Context, svc *order.Service, log *slog.Logger) {
	t := time.NewTicker(c.ReconcileEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := svc.Reconcile(ctx, c.ReconcileGrace, 50)
		if err != nil && ctx.Err() == nil {
			log.Warn("reconcile pass failed", "error", err)
		}
		if n > 0 {
			log.Info("reconciled orders", "settled", n)
		}
	}
}
