// Command payment runs the payment service: idempotent charges and refunds through a payment
// processor (the built-in deterministic simulator), and a stream of payment events.
//
// It needs where the user service publishes the keys that verify access tokens
// (-auth-keys-target; or one key file, -auth-public-key); with that alone it runs on an embedded
// SQLite file (data/payment.sqlite). In production give it a PostgreSQL
// DATABASE_URL shared by every replica; docs/configuration.md lists every setting.
package main

import (
	"context"
	"os"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/sqldb"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/grpcapi"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
	"github.com/meshmart/meshmart/services/payment/internal/store"
	"github.com/meshmart/meshmart/services/payment/migrations"
)

func main() {
	c := defaults()
	os.Exit(app.Main(app.Service{Name: "payment", GRPCAddr: ":50053", Settings: c, Start: c.start, Migrate: c.migrate}))
}

// settings are the payment service's own, beside the chassis' server.Config.
type settings struct {
	ProcessorTimeout time.Duration `flag:"processor-timeout" env:"MESHMART_PROCESSOR_TIMEOUT" usage:"bound on one processor call; past it the payment stays PENDING"`
	ProcessorLatency time.Duration `flag:"processor-latency" env:"MESHMART_PROCESSOR_LATENCY" usage:"delay the simulated processor adds to every answer"`
	WatchInterval    time.Duration `flag:"watch-interval" env:"MESHMART_WATCH_INTERVAL" usage:"how often WatchPayments streams look for new events"`
	Database         string        `flag:"database" env:"DATABASE_URL" usage:"SQLite file path (data/payment.sqlite when unset; its directory is created), or a postgres:// URL" secret:"true"`
}

func defaults() *settings {
	return &settings{ProcessorTimeout: 2 * time.Second, WatchInterval: 200 * time.Millisecond, Database: "data/payment.sqlite"}
}

// migrate applies the payment service's migrations to -database (`payment migrate`).
func (c *settings) migrate(ctx context.Context) ([]string, error) {
	return sqldb.MigrateDatabase(ctx, c.Database, migrations.FS)
}

func (c *settings) start(ctx context.Context, s *app.Setup) error {
	payments, err := store.Open(ctx, c.Database)
	if err != nil {
		return err
	}
	s.Defer("database", payments.Close)
	if err := s.ObserveDB(payments.DB.DB); err != nil {
		return err
	}
	metrics, err := newChargeMetrics(s.Registry)
	if err != nil {
		return err
	}
	svc := payment.NewService(payments, payment.Simulator{Latency: c.ProcessorLatency}, c.ProcessorTimeout, payment.WithObserver(metrics))
	s.Log.Info("payment service starting", "database", sqldb.Describe(c.Database),
		"processor", "simulator", "processor_timeout", c.ProcessorTimeout.String())
	return s.Serve(&paymentv1.PaymentService_ServiceDesc, grpcapi.New(svc, s.Log, c.WatchInterval))
}
