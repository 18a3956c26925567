package testkit

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/server"
)

// Logger returns a logger that writes through t.Log, so output shows only for failing tests.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-1]))
	return len(p), nil
}

// DiscardLogger returns a logger that drops everything, for load tests.
func DiscardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestConfig returns a server config for tests: no Consul, no HTTP listener, a short drain, and
// plaintext (in-process tests only; PKI.Configure turns TLS on).
func TestConfig() server.Config {
	cfg := server.DefaultConfig("127.0.0.1:0")
	cfg.InsecurePlaintext = true
	cfg.ConsulAddr = ""
	cfg.HTTPAddr = ""
	cfg.DrainDelay = 0
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.RateLimit = 0
	cfg.CheckInterval = 500 * time.Millisecond
	cfg.DeregisterAfter = 10 * time.Second
	return cfg
}

// Running is a chassis server running in the test's process.
type Running struct {
	// Server is the chassis server.
	Server *server.Server
	// Addr is where it listens (a bufconn address for Bufconn servers).
	Addr string

	cancel  context.CancelFunc
	stopped chan struct{}
	err     error // Run's result, once stopped is closed
}

// Stop shuts the server down gracefully and waits for Run to return, which it reports.
func (r *Running) Stop() error {
	r.cancel()
	<-r.stopped
	return r.err
}

// Serve runs srv on a real loopback socket until the test ends (or Stop).
func Serve(t testing.TB, srv *server.Server) *Running {
	t.Helper()
	addr, err := srv.Listen()
	if err != nil {
		t.Fatalf("testkit: listen: %v", err)
	}
	return run(t, srv, addr.String())
}

func run(t testing.TB, srv *server.Server, addr string) *Running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{Server: srv, Addr: addr, cancel: cancel, stopped: make(chan struct{})}
	a := app.New(Logger(t))
	a.Serve(srv)
	go func() { r.err = a.Run(ctx); close(r.stopped) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.stopped:
			if r.err != nil {
				t.Errorf("testkit: server: %v", r.err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("testkit: server did not stop within 30s")
		}
	})
	return r
}

// Bufconn runs a server built by build (given the in-memory listener it must serve on) and
// returns a client connection to it through the given dial options (plaintext when none).
func Bufconn(t testing.TB, build func(lis net.Listener) *server.Server, opts ...grpc.DialOption) (*Running, *grpc.ClientConn) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	r := run(t, build(lis), "bufnet")
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
	}, opts...)
	cc, err := grpc.NewClient("passthrough:///bufnet", opts...)
	if err != nil {
		t.Fatalf("testkit: bufconn client: %v", err)
	}
	t.Cleanup(func() {
		if err := cc.Close(); err != nil && !errors.Is(err, grpc.ErrClientConnClosing) {
			t.Errorf("testkit: close client: %v", err)
		}
	})
	return r, cc
}

// BufconnService runs impl as desc's service, named name, over bufconn behind the chassis' real
// interceptor chain (TestConfig, trusting the access tokens keys signs, logging through t), and
// returns a client connection to it. opts add to the server's options, such as
// server.WithPeerService.
func BufconnService(t testing.TB, name string, keys Keys, desc *grpc.ServiceDesc, impl any, opts ...server.Option) *grpc.ClientConn {
	t.Helper()
	cfg := TestConfig()
	cfg.AuthPublicKey = keys.PublicKeyFile
	_, cc := Bufconn(t, func(lis net.Listener) *server.Server {
		srv, err := server.New(name, cfg, Logger(t), append([]server.Option{server.WithListener(lis)}, opts...)...)
		if err != nil {
			t.Fatalf("testkit: server %s: %v", name, err)
		}
		if err := srv.RegisterService(desc, impl); err != nil {
			t.Fatalf("testkit: register %s: %v", desc.ServiceName, err)
		}
		return srv
	})
	return cc
}
