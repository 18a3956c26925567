package app_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// listServices asks cc's reflection service for the services it serves.
func listServices(ctx context.Context, cc *grpc.ClientConn) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	// A Send that finds the stream ended already says only io.EOF; Recv then says why.
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names, nil
}

// TestHealthPort runs an App whose main port serves mutual TLS with -health-addr set: the health
// port answers grpc.health.v1 in plaintext from the very same state (per service, NOT_SERVING
// once the stop begins, Watch included) and nothing else, within its own limits, and stops with
// the App; the main port still serves everything, and only over mutual TLS.
func TestHealthPort(t *testing.T) {
	t.Parallel()
	pki := testkit.NewPKI(t, "example")
	cfg := testkit.TestConfig()
	pki.Configure(&cfg, "example")
	cfg.HealthAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	cfg.DrainDelay = 2 * time.Second
	srv, mainPlain := exampleServer(t, cfg) // a plaintext client of the main port
	mainAddr, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	a := app.New(testkit.Logger(t))
	a.Serve(srv)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	plain, err := grpc.NewClient(cfg.HealthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	h := healthpb.NewHealthClient(plain)
	const userService = "meshmart.user.v1.UserService"
	testkit.Eventually(t, 5*time.Second, "the health port answering SERVING", func() (bool, string) {
		got := health(t.Context(), h)
		return got == "SERVING", got
	})
	if resp, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: userService}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Check(%s) on the health port = %v, %v; want SERVING", userService, resp, err)
	}
	if _, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: "no.such.Service"}); status.Code(err) != codes.NotFound {
		t.Errorf("Check of an unknown service on the health port = %v, want NotFound", err)
	}
	watchCtx, stopWatch := context.WithCancel(t.Context())
	defer stopWatch()
	watch, err := h.Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch on the health port = %v, %v; want SERVING first", resp, err)
	}

	// Nothing but health there: not reflection, not the service the main port serves.
	if _, err := listServices(t.Context(), plain); status.Code(err) != codes.Unimplemented {
		t.Errorf("reflection on the health port = %v, want Unimplemented", err)
	}
	if _, err := userv1.NewUserServiceClient(plain).GetUser(t.Context(), &userv1.GetUserRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("GetUser on the health port = %v, want Unimplemented", err)
	}
	// Its own limits: a request far larger than a service name is refused.
	if _, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: strings.Repeat("x", 4<<10)}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 4 KiB Check on the health port = %v, want ResourceExhausted", err)
	}

	// The main port is unchanged: mutual TLS only, reflection and the service served there.
	if got := health(t.Context(), mainPlain); got != "unreachable" {
		t.Errorf("a plaintext health check of the main port = %s, want it refused", got)
	}
	mainTLS, err := client.Dial(mainAddr.String(), testkit.Logger(t), pki.As("example"), client.WithServer("example"))
	if err != nil {
		t.Fatal(err)
	}
	defer mainTLS.Close()
	if got := health(t.Context(), healthpb.NewHealthClient(mainTLS)); got != "SERVING" {
		t.Errorf("health over mutual TLS on the main port = %s, want SERVING", got)
	}
	if names, err := listServices(t.Context(), mainTLS); err != nil || !strings.Contains(strings.Join(names, " "), userService) {
		t.Errorf("reflection on the main port = %v, %v; want it to list %s", names, err, userService)
	}

	// The stop begins: NOT_SERVING on the health port at once, through the whole drain delay.
	cancel()
	if resp, err := watch.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Watch after the stop began = %v, %v; want NOT_SERVING", resp, err)
	}
	if got := health(t.Context(), h); got != "NOT_SERVING" {
		t.Errorf("Check after the stop began = %s, want NOT_SERVING", got)
	}
	if resp, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: userService}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("Check(%s) after the stop began = %v, %v; want NOT_SERVING", userService, resp, err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	// Stopped with the App, after the drain: the open Watch ends and the port is closed.
	if _, err := watch.Recv(); err == nil {
		t.Error("a Watch on the health port outlived the App")
	}
	if conn, err := net.DialTimeout("tcp", cfg.HealthAddr, time.Second); err == nil {
		conn.Close()
		t.Error("the health port still accepts connections after Run returned")
	}
}

// TestHealthPortTaken: a health address that cannot be bound fails Run before anything serves,
// naming the address, and releases the main listener.
func TestHealthPortTaken(t *testing.T) {
	t.Parallel()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := testkit.TestConfig()
	cfg.HealthAddr = taken.Addr().String()
	srv, h := exampleServer(t, cfg)
	a := app.New(testkit.Logger(t))
	a.Serve(srv)
	if err := a.Run(t.Context()); err == nil || !strings.Contains(err.Error(), cfg.HealthAddr) {
		t.Errorf("Run with the health port taken = %v, want an error naming it", err)
	}
	if got := health(t.Context(), h); got != "unreachable" {
		t.Errorf("the main port is %s after a failed start, want it closed", got)
	}
}
