package client_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// flakyUsers answers GetUser with UNAVAILABLE while failures last, then with a user.
type flakyUsers struct {
	userv1.UnimplementedUserServiceServer
	failures atomic.Int32
}

func (f *flakyUsers) GetUser(context.Context, *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	if f.failures.Add(-1) >= 0 {
		return nil, status.Error(codes.Unavailable, "not now")
	}
	return &userv1.GetUserResponse{}, nil
}

// TestMetricsCountRetriesAndBreaker dials a server that fails, over a real socket, and checks
// that the retries gRPC makes and the breaker's transitions reach the metrics, and that two
// Dials share one registry.
func TestMetricsCountRetriesAndBreaker(t *testing.T) {
	t.Parallel()
	users := &flakyUsers{}
	srv := grpc.NewServer()
	userv1.RegisterUserServiceServer(srv, users)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	reg := prometheus.NewRegistry()
	dial := func(name string) userv1.UserServiceClient {
		cc, err := client.Dial(lis.Addr().String(), testkit.DiscardLogger(), client.WithInsecure(), client.WithServer(name),
			client.WithRegistry(reg), client.WithBreaker(interceptors.BreakerSettings{Window: time.Minute, OpenTimeout: time.Minute}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return userv1.NewUserServiceClient(cc)
	}
	c := dial("user")
	dial("other") // a second target in the same registry: its own series, no registration error
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	retries := func(peer string) float64 { return value(t, reg, "meshmart_client_retries_total", peer) }

	// One UNAVAILABLE, then success: gRPC retries GetUser (NO_SIDE_EFFECTS) once.
	users.failures.Store(1)
	if _, err := c.GetUser(ctx, &userv1.GetUserRequest{}); err != nil {
		t.Fatalf("GetUser after one failure: %v", err)
	}
	if got := retries("user"); got != 1 {
		t.Errorf("retries after one failed attempt = %v, want 1", got)
	}
	if got := retries("other"); got != 0 {
		t.Errorf("retries of the other target = %v, want 0", got)
	}
	if got := value(t, reg, "meshmart_client_breaker_state", "user"); got != 0 {
		t.Errorf("breaker state = %v, want 0 (closed)", got)
	}

	// Failing for good: each call is tried 4 times, and the breaker opens after 5 failed calls
	// (a minute's window, so that a slow machine's calls all count).
	users.failures.Store(1 << 30)
	for range 6 {
		c.GetUser(ctx, &userv1.GetUserRequest{})
	}
	if got := value(t, reg, "meshmart_client_breaker_state", "user"); got != 2 {
		t.Errorf("breaker state after failures = %v, want 2 (open)", got)
	}
	if got := retries("user"); got < 1+5*3 {
		t.Errorf("retries after 5 failing calls = %v, want at least 16", got)
	}
	opened, err := testutil.GatherAndCount(reg, "meshmart_client_breaker_transitions_total")
	if err != nil || opened != 6 { // closed, half-open, open for each of the two targets
		t.Errorf("transition series = %d (%v), want 6", opened, err)
	}
	// The calls themselves are counted by code, once per logical call.
	if n, err := testutil.GatherAndCount(reg, "grpc_client_handled_total"); err != nil || n == 0 {
		t.Errorf("grpc_client_handled_total series = %d (%v)", n, err)
	}
}

// value is the value of metric's series for peer_service=peer in reg, or -1 without one.
func value(t *testing.T, reg *prometheus.Registry, metric, peer string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if f.GetName() == metric && l.GetName() == "peer_service" && l.GetValue() == peer {
					return m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return -1
}
