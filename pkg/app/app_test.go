package app_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// events records what happened, in order.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.list = append(e.list, fmt.Sprintf(format, args...))
}

func (e *events) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.list, "; ")
}

// exampleServer builds the example server on a loopback port and returns it with a health client.
func exampleServer(t *testing.T, cfg server.Config) (*server.Server, healthpb.HealthClient) {
	t.Helper()
	srv, err := server.New("example", cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr.String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return srv, healthpb.NewHealthClient(cc)
}

// health is the server's overall health, or the error that asking for it met.
func health(ctx context.Context, h healthpb.HealthClient) string {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	resp, err := h.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return "unreachable"
	}
	return resp.GetStatus().String()
}

func TestStopOrder(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.DrainDelay = 300 * time.Millisecond
	cfg.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	srv, h := exampleServer(t, cfg)
	var ev events
	a := app.New(testkit.Logger(t))
	a.Serve(srv)
	started := make(chan struct{})
	var stopAsked time.Time
	a.Go("worker", func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		// The server no longer takes new work but still answers: workers stop before it does.
		ev.add("worker stopped after %v, server %s", time.Since(stopAsked) >= cfg.DrainDelay, health(t.Context(), h))
		return nil
	})
	a.Defer("first", func() error { ev.add("close first, server %s", health(t.Context(), h)); return nil })
	a.Defer("second", func() error { ev.add("close second"); return nil })

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	<-started
	if got := health(t.Context(), h); got != "SERVING" {
		t.Fatalf("health while running = %s, want SERVING", got)
	}
	stopAsked = time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after ctx ended = %v, want nil", err)
	}
	want := "worker stopped after true, server NOT_SERVING; close second; close first, server unreachable"
	if ev.String() != want {
		t.Errorf("stop order:\n got %s\nwant %s", ev.String(), want)
	}
}

func TestFailingWorkerStopsTheApp(t *testing.T) {
	t.Parallel()
	srv, h := exampleServer(t, testkit.TestConfig())
	var ev events
	a := app.New(testkit.Logger(t))
	a.Serve(srv)
	boom := errors.New("boom")
	a.Go("steady", func(ctx context.Context) error { <-ctx.Done(); ev.add("steady stopped"); return ctx.Err() })
	a.Go("finished", func(context.Context) error { return nil }) // returning nil just finishes
	a.Go("failing", func(context.Context) error { time.Sleep(100 * time.Millisecond); return boom })
	a.Defer("database", func() error { ev.add("closed"); return nil })
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	select {
	case err := <-done:
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "failing") {
			t.Errorf("Run = %v, want the failing worker's error, named", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a failing worker did not stop the app")
	}
	if ev.String() != "steady stopped; closed" {
		t.Errorf("events = %s, want the other worker stopped, then the closer", ev.String())
	}
	if got := health(t.Context(), h); got != "unreachable" {
		t.Errorf("the server is %s after the app stopped", got)
	}
}

func TestFailingServerStopsTheApp(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg.HTTPAddr = taken.Addr().String()
	srv, _ := exampleServer(t, cfg)
	a := app.New(testkit.Logger(t))
	a.Serve(srv)
	closed := false
	a.Defer("database", func() error { closed = true; return nil })
	if err := a.Run(t.Context()); err == nil || !strings.Contains(err.Error(), cfg.HTTPAddr) {
		t.Errorf("Run with the HTTP port taken = %v, want an error naming it", err)
	}
	if !closed {
		t.Error("the closers did not run")
	}
}

func TestWorkersOnly(t *testing.T) {
	t.Parallel()
	a := app.New(testkit.Logger(t))
	ctx, cancel := context.WithCancel(t.Context())
	a.Go("worker", func(ctx context.Context) error { cancel(); <-ctx.Done(); return nil })
	closeErr := errors.New("close failed")
	a.Defer("bad", func() error { return closeErr })
	if err := a.Run(ctx); !errors.Is(err, closeErr) || !strings.Contains(err.Error(), "close bad") {
		t.Errorf("Run = %v, want the closer's error, named", err)
	}
}

// TestReadyWhenHoldsServingBack: until every ReadyWhen gate is closed the server answers
// NOT_SERVING (and would not register in Consul), while the workers already run; a service that
// fetches its token keys must not take calls it cannot verify.
func TestReadyWhenHoldsServingBack(t *testing.T) {
	t.Parallel()
	srv, h := exampleServer(t, testkit.TestConfig())
	a := app.New(testkit.Logger(t))
	a.Serve(srv)
	ready := make(chan struct{})
	started := make(chan struct{})
	a.Go("key fetcher", func(ctx context.Context) error {
		close(started)
		<-ctx.Done()
		return nil
	})
	a.ReadyWhen("the token keys", ready)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	<-started // the workers run before the App is ready
	testkit.Eventually(t, 5*time.Second, "the server answering", func() (bool, string) {
		got := health(t.Context(), h)
		return got != "unreachable", got
	})
	time.Sleep(200 * time.Millisecond)
	if got := health(t.Context(), h); got != healthpb.HealthCheckResponse_NOT_SERVING.String() {
		t.Fatalf("health before ready = %s, want NOT_SERVING", got)
	}
	close(ready)
	testkit.Eventually(t, 5*time.Second, "SERVING once ready", func() (bool, string) {
		got := health(t.Context(), h)
		return got == healthpb.HealthCheckResponse_SERVING.String(), got
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}
