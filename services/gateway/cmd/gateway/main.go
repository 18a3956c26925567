// Command gateway is meshmart's edge for browsers and HTTP clients: REST (grpc-gateway) in front
// of the user, order and payment services, which it finds through Consul and calls over mutual
// TLS as the service "gateway". It verifies no access token itself: it forwards each caller's
// Authorization header, and the services decide. Its own gRPC server serves health checking and
// reflection only, for Consul and the probes; docs/configuration.md lists every setting.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/services/gateway/internal/rest"
)

// settings are the gateway's own, beside the chassis' server.Config.
type settings struct {
	RESTAddr      string   `flag:"rest-addr" env:"MESHMART_REST_ADDR" usage:"REST, OpenAPI and storefront listen address"`
	UserTarget    string   `flag:"user-target" env:"MESHMART_USER_TARGET" usage:"where the user service is"`
	OrderTarget   string   `flag:"order-target" env:"MESHMART_ORDER_TARGET" usage:"where the order service (orders and catalog) is"`
	PaymentTarget string   `flag:"payment-target" env:"MESHMART_PAYMENT_TARGET" usage:"where the payment service is"`
	CORSOrigins   []string `flag:"cors-origins" env:"MESHMART_CORS_ORIGINS" usage:"comma-separated browser origins (scheme://host[:port]) allowed to call the gateway across origins; its own origin always is"`
}

// Bounds of the REST server. No write timeout: server streams stay open as long as the client
// reads them.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

func defaults() *settings {
	return &settings{
		RESTAddr:      ":8080",
		UserTarget:    "consul://127.0.0.1:8500/user",
		OrderTarget:   "consul://127.0.0.1:8500/order",
		PaymentTarget: "consul://127.0.0.1:8500/payment",
		CORSOrigins:   rest.DefaultCORSOrigins,
	}
}

func main() {
	c := defaults()
	os.Exit(app.Main(app.Service{Name: "gateway", GRPCAddr: ":50054", Settings: c, Start: c.start, Edge: true}))
}

func (c *settings) start(ctx context.Context, s *app.Setup) error {
	// Mutual TLS with the gateway's own identity: the services see the verified caller "gateway"
	// (whose x-forwarded-for they trust), and only instances that prove to be the service a
	// target names are ever called.
	var conns rest.Conns
	var err error
	if conns.User, err = s.Dial(c.UserTarget, client.WithServer("user")); err != nil {
		return err
	}
	if conns.Order, err = s.Dial(c.OrderTarget, client.WithServer("order")); err != nil {
		return err
	}
	if conns.Payment, err = s.Dial(c.PaymentTarget, client.WithServer("payment")); err != nil {
		return err
	}
	gw, err := rest.New(ctx, conns, s.Log, rest.WithCORSOrigins(c.CORSOrigins...), rest.WithTracerProvider(s.Tracer))
	if err != nil {
		return err
	}
	if err := s.ServeChassis(); err != nil {
		return err
	}
	// Bound now, so that a taken port fails the start rather than a worker later.
	lis, err := net.Listen("tcp", c.RESTAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.RESTAddr, err)
	}
	srv := &http.Server{
		Handler:           gw,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn),
	}
	s.Log.Info("gateway starting", "rest_addr", lis.Addr().String(), "user_target", c.UserTarget,
		"order_target", c.OrderTarget, "payment_target", c.PaymentTarget, "cors_origins", strings.Join(c.CORSOrigins, ","))
	s.Go("rest server", func(ctx context.Context) error {
		return serveREST(ctx, srv, lis, s.Config.ShutdownTimeout, s.Log)
	})
	return nil
}

// serveREST serves srv on lis until ctx ends, then shuts it down: no new connections, and the
// requests in flight get until timeout to finish (open server streams hold it that long), after
// which the connections are closed, which cancels the calls still running upstream.
func serveREST(ctx context.Context, srv *http.Server, lis net.Listener, timeout time.Duration, log *slog.Logger) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve REST on %s: %w", lis.Addr(), err)
	case <-ctx.Done():
	}
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := srv.Shutdown(stop); err != nil {
		log.Warn("REST requests still open at the shutdown timeout were cut off", "error", err)
		_ = srv.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve REST on %s: %w", lis.Addr(), err)
	}
	return nil
}
