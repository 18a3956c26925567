package client_test

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// replica is a user service stand-in on a real socket: it answers GetUser and UpdateUser at once,
// or, once hung, never (until the call is cancelled), counting the calls it got and those it saw
// cancelled.
type replica struct {
	userv1.UnimplementedUserServiceServer
	name                     string
	addr                     string
	hung                     atomic.Bool
	notFoundAfter            atomic.Int64 // nanoseconds; when set, GetUser answers NotFound after them
	delay                    atomic.Int64 // nanoseconds GetUser takes to answer
	reads, writes, cancelled atomic.Int32
}

func startReplica(t testing.TB, name string) *replica {
	t.Helper()
	r := &replica{name: name}
	srv := grpc.NewServer()
	userv1.RegisterUserServiceServer(srv, r)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = lis.Addr().String()
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return r
}

func (r *replica) answer(ctx context.Context) error {
	if !r.hung.Load() {
		return nil
	}
	<-ctx.Done()
	r.cancelled.Add(1)
	return ctx.Err()
}

func (r *replica) GetUser(ctx context.Context, _ *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	r.reads.Add(1)
	if err := r.answer(ctx); err != nil {
		return nil, err
	}
	if d := time.Duration(r.notFoundAfter.Load()); d > 0 {
		time.Sleep(d)
		return nil, status.Error(codes.NotFound, "no such user")
	}
	select {
	case <-time.After(time.Duration(r.delay.Load())):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs(servedBy, r.name))
	return &userv1.GetUserResponse{User: &userv1.User{Username: r.name}}, nil
}

func (r *replica) UpdateUser(ctx context.Context, _ *userv1.UpdateUserRequest) (*userv1.UpdateUserResponse, error) {
	r.writes.Add(1)
	if err := r.answer(ctx); err != nil {
		return nil, err
	}
	return &userv1.UpdateUserResponse{User: &userv1.User{Username: r.name}}, nil
}

// dialReplicas dials the replicas through one ClientConn, balanced as the chassis balances a
// consul:// target.
func dialReplicas(t *testing.T, reg *prometheus.Registry, hedging client.HedgeSettings, replicas ...*replica) userv1.UserServiceClient {
	t.Helper()
	var addrs []string
	for _, r := range replicas {
		addrs = append(addrs, r.addr)
	}
	return dialAddrs(t, reg, hedging, addrs)
}

// dialAddrs dials addrs through one ClientConn, as dialReplicas does, with extra dial options.
func dialAddrs(t testing.TB, reg *prometheus.Registry, hedging client.HedgeSettings, addrs []string, extra ...grpc.DialOption) userv1.UserServiceClient {
	t.Helper()
	res := manual.NewBuilderWithScheme("replicas")
	var state resolver.State
	for _, a := range addrs {
		state.Addresses = append(state.Addresses, resolver.Address{Addr: a})
	}
	res.InitialState(state)
	cc, err := client.Dial("replicas:///user", testkit.DiscardLogger(), client.WithInsecure(), client.WithServer("user"),
		client.WithRegistry(reg), client.WithHedging(hedging), client.WithDialOptions(append(extra, grpc.WithResolvers(res))...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return userv1.NewUserServiceClient(cc)
}

// untilBothRead reads until both replicas were sent a read: both are ready.
func untilBothRead(ctx context.Context, t *testing.T, users userv1.UserServiceClient, a, b *replica) {
	t.Helper()
	for a.reads.Load() == 0 || b.reads.Load() == 0 {
		if _, err := users.GetUser(ctx, &userv1.GetUserRequest{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHedgeAnswersFromAnotherReplica hangs one of two replicas under concurrent reads: every
// read sent to it is hedged to the other, which answers; the hung replica's attempts are
// cancelled; the metric counts the hedges.
func TestHedgeAnswersFromAnotherReplica(t *testing.T) {
	t.Parallel()
	good, bad := startReplica(t, "good"), startReplica(t, "bad")
	reg := prometheus.NewRegistry()
	users := dialReplicas(t, reg, client.HedgeSettings{MaxDelay: 50 * time.Millisecond, Burst: 1000}, good, bad)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	untilBothRead(ctx, t, users, good, bad)
	bad.hung.Store(true)
	before := bad.reads.Load()

	// Concurrent callers, so that round robin is picked by other calls between an attempt and
	// its hedge: the hedge must still go to the replica its call has not tried.
	const callers, calls = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, callers*calls)
	for range callers {
		wg.Go(func() {
			for range calls {
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				resp, err := users.GetUser(callCtx, &userv1.GetUserRequest{})
				cancel()
				if err == nil && resp.GetUser().GetUsername() != "good" {
					err = status.Errorf(codes.Internal, "answered by %q", resp.GetUser().GetUsername())
				}
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			failed++
			t.Log(err)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d reads failed while one replica hung, want none", failed, callers*calls)
	}
	sent := bad.reads.Load() - before
	if sent == 0 {
		t.Fatal("the hung replica was sent no read: the test proves nothing")
	}
	// Every attempt the hung replica got was cancelled once its hedge answered.
	deadline := time.Now().Add(10 * time.Second)
	for bad.cancelled.Load() < sent && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := bad.cancelled.Load(); got != sent {
		t.Errorf("%d of the %d attempts sent to the hung replica were cancelled, want all", got, sent)
	}
	if got := value(t, reg, "meshmart_client_hedges_total", "user"); got < float64(sent) {
		t.Errorf("meshmart_client_hedges_total = %v, want at least the %d reads sent to the hung replica", got, sent)
	}
	t.Logf("%d of %d reads went to the hung replica first and were answered by the other; %v hedges",
		sent, callers*calls, value(t, reg, "meshmart_client_hedges_total", "user"))
}

// servedBy is the header in which a replica names itself.
const servedBy = "served-by"

// TestHedgeHeaderIsTheWinners hedges every read between two replicas that take as long as each
// other: the caller's Header option holds the header of the attempt whose answer it got, and the
// losing attempt, which ends after the call returned, writes nothing into it (the race detector
// watches: before, both attempts wrote into the caller's metadata).
func TestHedgeHeaderIsTheWinners(t *testing.T) {
	t.Parallel()
	a, b := startReplica(t, "a"), startReplica(t, "b")
	users := dialReplicas(t, prometheus.NewRegistry(), client.HedgeSettings{MinDelay: time.Millisecond, MaxDelay: time.Millisecond, Ratio: 1, Burst: 1000}, a, b)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	untilBothRead(ctx, t, users, a, b)
	a.delay.Store(int64(5 * time.Millisecond))
	b.delay.Store(int64(5 * time.Millisecond))
	for range 50 {
		var header metadata.MD
		resp, err := users.GetUser(ctx, &userv1.GetUserRequest{}, grpc.Header(&header))
		if err != nil {
			t.Fatal(err)
		}
		if got := header.Get(servedBy); len(got) != 1 || got[0] != resp.GetUser().GetUsername() {
			t.Fatalf("answered by %q with the header %s: %v", resp.GetUser().GetUsername(), servedBy, got)
		}
	}
}

// TestHedgeNeverForWrites checks that a write (UpdateUser: IDEMPOTENT, but with a side effect) to
// a hung replica is sent once, while a read is hedged, and that streams and side-effecting
// methods are never hedgeable.
func TestHedgeNeverForWrites(t *testing.T) {
	t.Parallel()
	only := startReplica(t, "only")
	reg := prometheus.NewRegistry()
	users := dialReplicas(t, reg, client.HedgeSettings{MaxDelay: 20 * time.Millisecond}, only)
	if _, err := users.GetUser(t.Context(), &userv1.GetUserRequest{}); err != nil {
		t.Fatal(err)
	}
	only.hung.Store(true)
	hedgesBefore := value(t, reg, "meshmart_client_hedges_total", "user")

	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err := users.UpdateUser(ctx, &userv1.UpdateUserRequest{})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("UpdateUser to a hung replica: %v, want DeadlineExceeded", err)
	}
	if got := only.writes.Load(); got != 1 {
		t.Errorf("UpdateUser was sent %d times, want once", got)
	}
	if got := value(t, reg, "meshmart_client_hedges_total", "user"); got != hedgesBefore {
		t.Errorf("meshmart_client_hedges_total went from %v to %v with a write, want no change", hedgesBefore, got)
	}

	// A read is hedged, to the same replica when it is the only one.
	readsBefore := only.reads.Load()
	ctx, cancel = context.WithTimeout(t.Context(), 500*time.Millisecond)
	_, err = users.GetUser(ctx, &userv1.GetUserRequest{})
	cancel()
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("GetUser to a hung replica: %v, want DeadlineExceeded", err)
	}
	if got := only.reads.Load() - readsBefore; got != 2 {
		t.Errorf("the hung replica got %d attempts of one read, want the first and its hedge", got)
	}

	hedgeable := client.Hedgeable(protoregistry.GlobalFiles)
	for _, m := range []string{"/meshmart.user.v1.UserService/GetUser", "/meshmart.order.v1.OrderService/ListOrders", "/meshmart.payment.v1.PaymentService/ListPayments"} {
		if !slices.Contains(hedgeable, m) {
			t.Errorf("%s (NO_SIDE_EFFECTS) is not hedgeable", m)
		}
	}
	for _, m := range []string{
		"/meshmart.user.v1.UserService/UpdateUser", "/meshmart.user.v1.UserService/Login", // IDEMPOTENT
		"/meshmart.order.v1.OrderService/CreateOrder", "/meshmart.user.v1.UserService/CreateUser",
		"/meshmart.user.v1.UserService/ExportUsers", "/meshmart.payment.v1.PaymentService/WatchPayments", // streams
	} {
		if slices.Contains(hedgeable, m) {
			t.Errorf("%s is hedgeable", m)
		}
	}
}

// TestHedgeTokensCapTheExtraLoad hangs the only replica with a bucket of one token and a ratio of
// almost nothing: of many slow reads, one is hedged.
func TestHedgeTokensCapTheExtraLoad(t *testing.T) {
	t.Parallel()
	only := startReplica(t, "only")
	reg := prometheus.NewRegistry()
	users := dialReplicas(t, reg, client.HedgeSettings{MaxDelay: 10 * time.Millisecond, Burst: 1, Ratio: 0.001}, only)
	only.hung.Store(true)
	for range 5 {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		users.GetUser(ctx, &userv1.GetUserRequest{})
		cancel()
	}
	if got := value(t, reg, "meshmart_client_hedges_total", "user"); got != 1 {
		t.Errorf("meshmart_client_hedges_total = %v, want 1 (a burst of one token)", got)
	}
	if got := only.reads.Load(); got != 5+1 {
		t.Errorf("the replica got %d reads, want 5 and one hedge", got)
	}
}

// TestHungReplicaIsSkipped hangs one of two replicas under sequential reads: once hedges have
// answered for it three times in a row, new reads skip it for a second instead of waiting for
// their hedge, and then one is sent to it again (and hedged).
func TestHungReplicaIsSkipped(t *testing.T) {
	t.Parallel()
	good, bad := startReplica(t, "good"), startReplica(t, "bad")
	// A fixed 20 ms before a hedge: with the default 2 ms floor a read of the good replica that
	// a busy machine (or the race detector) slows past it is hedged, to the hung one, which is
	// then sent a read the count below does not expect (4 of 40 in 2 of 20 runs).
	users := dialReplicas(t, prometheus.NewRegistry(), client.HedgeSettings{MinDelay: 20 * time.Millisecond, MaxDelay: 20 * time.Millisecond, Burst: 1000}, good, bad)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	untilBothRead(ctx, t, users, good, bad)
	bad.hung.Store(true)
	before := bad.reads.Load()
	const calls = 40
	start := time.Now()
	for range calls {
		if _, err := users.GetUser(ctx, &userv1.GetUserRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(start)
	sent := int(bad.reads.Load() - before)
	// Round robin alone sends it every other read (20); skipped, it gets the 3 that make it a
	// suspect, and 3 more for every second the reads took.
	want := 3 * (1 + int(took/time.Second))
	t.Logf("%d of %d reads went to the hung replica first, in %v", sent, calls, took.Round(time.Millisecond))
	if sent > want {
		t.Errorf("the hung replica was sent %d of %d reads in %v, want at most %d", sent, calls, took, want)
	}
}

// TestHedgeAnswersWithTheFirstVerdict has one replica answer NotFound, slowly, and the other hang:
// the call returns NotFound as soon as either attempt has it, first or hedge, rather than wait for
// the hung one until the deadline.
func TestHedgeAnswersWithTheFirstVerdict(t *testing.T) {
	t.Parallel()
	slow, bad := startReplica(t, "slow"), startReplica(t, "bad")
	users := dialReplicas(t, prometheus.NewRegistry(), client.HedgeSettings{MaxDelay: 20 * time.Millisecond, Burst: 1000}, slow, bad)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	untilBothRead(ctx, t, users, slow, bad)
	slow.notFoundAfter.Store(int64(100 * time.Millisecond))
	bad.hung.Store(true)
	// Two calls: round robin sends the first attempt of one to each replica.
	for range 2 {
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := users.GetUser(callCtx, &userv1.GetUserRequest{})
		cancel()
		if status.Code(err) != codes.NotFound {
			t.Errorf("GetUser: %v, want NotFound", err)
		}
	}
}
