package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// The admin the stack's user database holds, made by the user binary's admin subcommand before
// the user service starts, as the launcher does: no RPC makes an admin.
const (
	adminEmail    = "admin@example.com"
	adminPassword = "admin-test-password"
)

// stack is the whole platform: Consul, the user and payment services, and order replicas.
type stack struct {
	t                testing.TB
	agent            *testkit.Consul
	pki              testkit.PKI
	bins             map[string]string
	keyFile, pubFile string
	dbs              map[string]string
	env              []string
	user, payment    *testkit.Process
	conns            map[string]*grpc.ClientConn // the test's own consul:// connections
	orders           orderv1.OrderServiceClient
	users            userv1.UserServiceClient
	payments         paymentv1.PaymentServiceClient
	traces           *testkit.Traces
}

// startStack starts the platform; env is added to every process's environment.
func startStack(t testing.TB, dsn func(testing.TB) string, orderReplicas int, env ...string) *stack {
	t.Helper()
	s := &stack{t: t, agent: testkit.StartConsul(t), pki: testkit.NewPKI(t, "user", "payment", "order"), bins: map[string]string{}, dbs: map[string]string{},
		conns: map[string]*grpc.ClientConn{}}
	for _, svc := range []string{"user", "payment", "order"} {
		s.bins[svc] = testkit.BuildBinary(t, "github.com/meshmart/meshmart/services/"+svc+"/cmd/"+svc)
		s.dbs[svc] = dsn(t)
		// Each schema is migrated before any replica starts, as the Helm chart's Job does; the
		// services then find nothing to do.
		checkMigrateCommand(t, s.bins[svc], s.dbs[svc])
	}
	privPEM, pubPEM, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s.keyFile, s.pubFile = filepath.Join(dir, "auth.key.pem"), filepath.Join(dir, "auth.pub.pem")
	if err := os.WriteFile(s.keyFile, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.pubFile, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if s.traces, err = testkit.StartTraces(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.traces.Stop)
	s.env = append(s.traces.Env(), env...)

	s.makeAdmin(t, dir)
	s.user = s.startUser()
	s.payment = s.startPayment()
	for range orderReplicas {
		s.start("order", "-reconcile-interval", "200ms", "-reconcile-grace", "300ms",
			"-track-interval", "50ms", "-settle-lease", "5s", "-catalog-seed", "../../catalog.json",
			"-user-target", "consul://"+s.agent.Addr+"/user", "-payment-target", "consul://"+s.agent.Addr+"/payment")
	}
	s.waitPassing(t, "user", 1)
	s.waitPassing(t, "payment", 1)
	s.waitPassing(t, "order", orderReplicas)
	dial := func(svc string) *grpc.ClientConn {
		cc, err := client.Dial("consul://"+s.agent.Addr+"/"+svc, testkit.Logger(t), s.pki.Anonymous())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		s.conns[svc] = cc
		return cc
	}
	s.orders = orderv1.NewOrderServiceClient(dial("order"))
	s.users = userv1.NewUserServiceClient(dial("user"))
	s.payments = paymentv1.NewPaymentServiceClient(dial("payment"))
	return s
}

func (s *stack) startUser() *testkit.Process {
	return s.start("user", "-signing-key", s.keyFile)
}

// makeAdmin runs `user admin` against the user service's database, with the password in a file
// of dir.
func (s *stack) makeAdmin(t testing.TB, dir string) {
	t.Helper()
	file := filepath.Join(dir, "admin-password")
	if err := os.WriteFile(file, []byte(adminPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(s.bins["user"], "admin", "-email", adminEmail, "-password-file", file)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+s.dbs["user"])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("user admin: %v\n%s", err, out)
	}
}

// admin logs the stack's admin in and returns a context carrying its token.
func (s *stack) admin(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login, err := s.users.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Email{Email: adminEmail}, Password: adminPassword})
	if err != nil {
		t.Fatalf("log the admin in: %v", err)
	}
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+login.GetAccessToken())
}

// start runs a service over mutual TLS with its own identity; payment and order verify tokens with
// the keys they fetch from the user service.
func (s *stack) start(svc string, args ...string) *testkit.Process {
	args = append([]string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "", "-consul-addr", s.agent.Addr,
		"-check-interval", "300ms", "-drain-delay", "100ms"}, args...)
	if svc != "user" {
		args = append(args, "-auth-keys-target", "consul://"+s.agent.Addr+"/user", "-auth-keys-refresh", "1s")
	}
	env := append(append(slices.Clone(s.env), s.pki.Env(svc)...), "DATABASE_URL="+s.dbs[svc])
	return testkit.StartProcess(s.t, svc+" service", s.bins[svc], args, env...)
}

func (s *stack) waitPassing(t testing.TB, svc string, n int) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, svc+" instances passing", func() (bool, string) {
		addrs, err := s.agent.Passing(context.Background(), svc)
		return err == nil && len(addrs) == n, fmt.Sprint(addrs, err)
	})
}

// restart starts a service again after Stop and waits until both Consul and the test's own
// connection know the new instance: Consul reports it passing before a client's resolver has
// heard of it, and a non-idempotent call in between would fail with Unavailable. The process
// lives as long as the stack, not as long as t.
func (s *stack) restart(t testing.TB, svc string, start func() *testkit.Process) *testkit.Process {
	t.Helper()
	p := start()
	s.waitPassing(t, svc, 1)
	health := healthpb.NewHealthClient(s.conns[svc])
	testkit.Eventually(t, 20*time.Second, svc+" reachable through the test's connection", func() (bool, string) {
		resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING, fmt.Sprint(resp, err)
	})
	return p
}

func (s *stack) startPayment() *testkit.Process {
	return s.start("payment", "-processor-timeout", "300ms", "-watch-interval", "50ms")
}

func (s *stack) addrs(t testing.TB, svc string) []string {
	addrs, err := s.agent.Passing(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// signUp creates an account, logs it in and returns its id and a context carrying its token.
func (s *stack) signUp(t testing.TB, name string) (string, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	created, err := s.users.CreateUser(ctx, &userv1.CreateUserRequest{Email: name + "@example.com", Username: name, Password: "correct horse", GivenName: name})
	if err != nil {
		t.Fatalf("sign up %s: %v", name, err)
	}
	return created.GetUser().GetId(), s.logIn(t, name)
}

// logIn logs an account of signUp in and returns a context carrying its token.
func (s *stack) logIn(t testing.TB, name string) context.Context {
	t.Helper()
	return bearer(s.login(t, name).GetAccessToken())
}

// login logs an account of signUp in.
func (s *stack) login(t testing.TB, name string) *userv1.LoginResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	login, err := s.users.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: name}, Password: "correct horse"})
	if err != nil {
		t.Fatalf("log %s in: %v", name, err)
	}
	return login
}

// bearer returns a context carrying an access token.
func bearer(token string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
}

func orderReq(token, key string) *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		Items:              []*orderv1.LineItem{{Sku: "BOOK-1", Quantity: 2}, {Sku: "PEN-7", Quantity: 3}},
		PaymentMethodToken: token, IdempotencyKey: key,
	}
}

func (s *stack) status(t testing.TB, ctx context.Context, id string) orderv1.OrderStatus {
	t.Helper()
	resp, err := s.orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: id})
	if err != nil {
		t.Fatalf("GetOrder %s: %v", id, err)
	}
	return resp.GetOrder().GetStatus()
}

// pendingOrderID returns the order id a PAYMENT_PENDING error names.
func pendingOrderID(t *testing.T, err error) string {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		t.Fatalf("got %v, want Unavailable with the order kept pending", err)
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "PAYMENT_PENDING" {
			return info.GetMetadata()["order_id"]
		}
	}
	t.Fatalf("no PAYMENT_PENDING detail in %v", err)
	return ""
}

// account signs up a user of its own for one flow and returns its id and a context carrying its
// token, bounded so that a hung call fails the flow rather than the whole test binary.
func (s *stack) account(t *testing.T, name string) (string, context.Context) {
	t.Helper()
	id, ctx := s.signUp(t, name)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(cancel)
	return id, ctx
}

// createPaid places an order that must come back PAID.
func (s *stack) createPaid(t *testing.T, ctx context.Context, key string) *orderv1.Order {
	t.Helper()
	resp, err := s.orders.CreateOrder(ctx, orderReq("tok_approve", key))
	if err != nil || resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID {
		t.Fatalf("CreateOrder %s = %v, %v; want PAID", key, resp, err)
	}
	return resp.GetOrder()
}

// TestOrderFlows runs every flow against one started stack per database kind. Each flow signs
// up its own users and places its own orders, so any of them can run alone
// (-run 'TestOrderFlows/sqlite/decline'). They run one after another because some stop and
// restart a service; each leaves the stack as it found it, every service reachable.
func TestOrderFlows(t *testing.T) {
	t.Parallel()
	flows := []struct {
		name string
		run  func(t *testing.T, s *stack)
	}{
		{"happy path", flowHappyPath},
		{"decline", flowDecline},
		{"idempotent retry", flowIdempotentRetry},
		{"payment timeout then reconciliation", flowPaymentTimeout},
		{"payment service down then back", flowPaymentDown},
		{"cancel while the payment service is down", flowCancelWhilePaymentDown},
		{"the reconciler settles on its own", flowReconcilerSettles},
		{"user service down", flowUserDown},
		{"user suspended", flowUserSuspended},
		{"TrackOrders across replicas, cancel with refund", flowTrackAndCancel},
		{"one trace spans the order and payment services", flowTrace},
	}
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) {
		s := startStack(t, db.New, 2)
		for _, f := range flows {
			t.Run(f.name, func(t *testing.T) { f.run(t, s) })
		}
	})
}

func flowHappyPath(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-happy")
	paid := s.createPaid(t, ada, "o1")
	if paid.GetTotal().GetMinorUnits() != 2*1999+3*250 || paid.GetPaymentId() == "" {
		t.Fatalf("order = %v", paid)
	}
	p, err := s.payments.GetPayment(ada, &paymentv1.GetPaymentRequest{Id: paid.GetPaymentId()})
	if err != nil || p.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED || p.GetPayment().GetAmount().GetMinorUnits() != 4748 {
		t.Fatalf("its payment = %v, %v", p, err)
	}
}

func flowDecline(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-decline")
	resp, err := s.orders.CreateOrder(ada, orderReq("tok_insufficient_funds", "o2"))
	if err != nil || resp.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAYMENT_FAILED || resp.GetOrder().GetPaymentFailureReason() == "" {
		t.Fatalf("declined order = %v, %v", resp, err)
	}
}

func flowIdempotentRetry(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-retry")
	paid := s.createPaid(t, ada, "o1")
	again, err := s.orders.CreateOrder(ada, orderReq("tok_approve", "o1"))
	if err != nil || again.GetOrder().GetId() != paid.GetId() {
		t.Fatalf("retry = %v, %v; want order %s", again, err, paid.GetId())
	}
	other := orderReq("tok_approve", "o1")
	other.Items[0].Quantity = 5
	if _, err := s.orders.CreateOrder(ada, other); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("key reuse = %v, want FailedPrecondition", err)
	}
}

// settledByRetry repeats ada's CreateOrder with its key until the order is PAID: the retry
// settles a pending order with ada's own token. The reconciler does the same on its own once the
// order service has an identity of its own (flowReconcilerSettles).
func (s *stack) settledByRetry(t *testing.T, ada context.Context, req *orderv1.CreateOrderRequest, id string) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, "the order paid by the user's retry", func() (bool, string) {
		resp, err := s.orders.CreateOrder(ada, req)
		if code := status.Code(err); code != codes.OK && code != codes.Unavailable {
			t.Fatalf("the retry = %v", err)
		}
		return err == nil && resp.GetOrder().GetId() == id && resp.GetOrder().GetStatus() == orderv1.OrderStatus_ORDER_STATUS_PAID, fmt.Sprint(resp.GetOrder().GetStatus(), err)
	})
}

func flowPaymentTimeout(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-timeout")
	req := orderReq("tok_timeout", "o3")
	_, err := s.orders.CreateOrder(ada, req)
	id := pendingOrderID(t, err)
	if got := s.status(t, ada, id); got != orderv1.OrderStatus_ORDER_STATUS_PENDING && got != orderv1.OrderStatus_ORDER_STATUS_PAID {
		t.Fatalf("order after the timeout = %v", got)
	}
	s.settledByRetry(t, ada, req, id)
}

// chargingAgain waits until orders are charged again through both order replicas (four in a row,
// round robin) after the payment service came back. While it was down, each replica's payment
// follower and reconciler kept calling it, so each replica's circuit breaker for it may be open:
// it closes once its open timeout has passed and a probe succeeds. A flow that stopped the payment
// service calls it last, so the next flow finds the stack as the first one did.
func (s *stack) chargingAgain(t *testing.T, who context.Context) {
	t.Helper()
	n, inARow := 0, 0
	testkit.Eventually(t, 30*time.Second, "orders charged again through every order replica", func() (bool, string) {
		n++
		_, err := s.orders.CreateOrder(who, orderReq("tok_approve", fmt.Sprintf("charging-again-%d", n)))
		if code := status.Code(err); code != codes.OK && code != codes.Unavailable {
			t.Fatalf("CreateOrder after the payment service came back = %v", err)
		}
		if inARow++; err != nil {
			inARow = 0
		}
		return inARow >= 4, fmt.Sprint(err)
	})
}

func flowPaymentDown(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-payment-down")
	s.payment.Stop()
	req := orderReq("tok_approve", "o4")
	_, err := s.orders.CreateOrder(ada, req)
	id := pendingOrderID(t, err)
	if got := s.status(t, ada, id); got != orderv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Fatalf("order while payment is down = %v, want PENDING", got)
	}
	s.payment = s.restart(t, "payment", s.startPayment)
	s.settledByRetry(t, ada, req, id)
	list, err := s.payments.ListPayments(ada, &paymentv1.ListPaymentsRequest{OrderId: id})
	if err != nil || len(list.GetPayments()) != 1 {
		t.Fatalf("payments of the order: %v, %v; want exactly one", list, err)
	}
	s.chargingAgain(t, ada)
}

func flowCancelWhilePaymentDown(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-cancel-down")
	paid := s.createPaid(t, ada, "o5")
	s.payment.Stop()
	cancelling, err := s.orders.CancelOrder(ada, &orderv1.CancelOrderRequest{Id: paid.GetId()})
	if err != nil || cancelling.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLING {
		t.Fatalf("cancel with payment down = %v, %v; want CANCELLING", cancelling, err)
	}
	s.payment = s.restart(t, "payment", s.startPayment)
	// Cancelling again finishes the compensation with ada's token; the reconciler does it on its
	// own once the order service has an identity of its own (flowReconcilerSettles).
	testkit.Eventually(t, 30*time.Second, "the refund finished by cancelling again", func() (bool, string) {
		resp, err := s.orders.CancelOrder(ada, &orderv1.CancelOrderRequest{Id: paid.GetId()})
		if code := status.Code(err); code != codes.OK && code != codes.Unavailable {
			t.Fatalf("cancelling again = %v", err)
		}
		got := resp.GetOrder().GetStatus()
		return got == orderv1.OrderStatus_ORDER_STATUS_CANCELLED, fmt.Sprint(got, err)
	})
	p, err := s.payments.GetPayment(ada, &paymentv1.GetPaymentRequest{Id: paid.GetPaymentId()})
	if err != nil || p.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED {
		t.Fatalf("its payment = %v, %v; want REFUNDED", p, err)
	}
	s.chargingAgain(t, ada)
}

// flowReconcilerSettles leaves a pending order and a cancelling one to the reconciler alone. It
// calls the payment service as the order service itself, with no user's token: its certificate
// (mutual TLS) is all that proves it may.
func flowReconcilerSettles(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-reconciler")
	paid := s.createPaid(t, ada, "o8")
	s.payment.Stop()
	_, err := s.orders.CreateOrder(ada, orderReq("tok_approve", "o9"))
	pending := pendingOrderID(t, err)
	if _, err := s.orders.CancelOrder(ada, &orderv1.CancelOrderRequest{Id: paid.GetId()}); err != nil {
		t.Fatal(err)
	}
	s.payment = s.restart(t, "payment", s.startPayment)
	testkit.Eventually(t, 30*time.Second, "the reconciler settling both orders", func() (bool, string) {
		a, b := s.status(t, ada, pending), s.status(t, ada, paid.GetId())
		return a == orderv1.OrderStatus_ORDER_STATUS_PAID && b == orderv1.OrderStatus_ORDER_STATUS_CANCELLED, fmt.Sprint(a, b)
	})
	s.chargingAgain(t, ada)
}

func flowUserDown(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-user-down")
	s.createPaid(t, ada, "o1")
	s.user.Stop()
	// Ada's token says her account was active when it was issued, and the order service takes its
	// word (issue 18, the user-check hop): her order needs no user service, and is charged.
	o, err := s.orders.CreateOrder(ada, orderReq("tok_approve", "o6"))
	if err != nil {
		t.Fatalf("CreateOrder with the user service down and an active account's token = %v, want it placed", err)
	}
	if got := o.GetOrder().GetStatus(); got != orderv1.OrderStatus_ORDER_STATUS_PAID {
		t.Fatalf("the order placed with the user service down is %v, want PAID", got)
	}
	s.user = s.restart(t, "user", s.startUser)
	// The order service may not have heard of the restarted user service yet: wait until it has,
	// so the next flow finds the stack as this one found it.
	testkit.Eventually(t, 20*time.Second, "an order placed once the user service is back", func() (bool, string) {
		_, err := s.orders.CreateOrder(ada, orderReq("tok_approve", "o7"))
		if code := status.Code(err); code != codes.OK && code != codes.Unavailable {
			t.Fatalf("CreateOrder after the restart = %v", err)
		}
		return err == nil, fmt.Sprint(err)
	})
}

func flowUserSuspended(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-suspended")
	adas := s.createPaid(t, ada, "o1")
	bobID, bob := s.account(t, "bob")
	_, err := s.users.UpdateUser(s.admin(t), &userv1.UpdateUserRequest{
		User:       &userv1.User{Id: bobID, Status: userv1.UserStatus_USER_STATUS_SUSPENDED},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// bob's token from before the suspension says his account was active, and the order service
	// takes its word until it expires (TestSuspensionWindow). A token bob gets now says his account
	// is suspended: the order service asks the user service.
	bob = s.logIn(t, "bob")
	// Should the order service not have heard of a restarted user service yet: Unavailable until
	// it has (nothing is written then either), FailedPrecondition once it asks.
	testkit.Eventually(t, 10*time.Second, "a suspended user's order refused", func() (bool, string) {
		_, err := s.orders.CreateOrder(bob, orderReq("tok_approve", "b1"))
		switch status.Code(err) {
		case codes.FailedPrecondition:
			return true, ""
		case codes.Unavailable:
			return false, err.Error()
		}
		t.Fatalf("a suspended user's order = %v, want FailedPrecondition", err)
		return false, ""
	})
	list, err := s.orders.ListOrders(bob, &orderv1.ListOrdersRequest{})
	if err != nil || len(list.GetOrders()) != 0 {
		t.Fatalf("the suspended user's orders = %v, %v; want none written", list, err)
	}
	if _, err := s.orders.GetOrder(bob, &orderv1.GetOrderRequest{Id: adas.GetId()}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("bob reading ada's order = %v", err)
	}
}

func flowTrackAndCancel(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-track")
	paid := s.createPaid(t, ada, "o1")
	replicas := s.addrs(t, "order")
	direct := func(addr string) orderv1.OrderServiceClient {
		cc, err := client.Dial(addr, testkit.Logger(t), client.WithServer("order"), s.pki.Anonymous())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return orderv1.NewOrderServiceClient(cc)
	}
	watcher, writer := direct(replicas[0]), direct(replicas[len(replicas)-1])
	stream, err := watcher.TrackOrders(ada)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: paid.GetId()}}); err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil || first.GetUpdate().GetType() != orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_SUBSCRIBED ||
		first.GetUpdate().GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID {
		t.Fatalf("subscription = %v, %v", first, err)
	}
	// Closing the sending side ends subscription changes, not the updates.
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	cancelled, err := writer.CancelOrder(ada, &orderv1.CancelOrderRequest{Id: paid.GetId(), Reason: "changed my mind"})
	if err != nil || cancelled.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Fatalf("CancelOrder = %v, %v", cancelled, err)
	}
	var seen []string
	for _, want := range []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_CANCELLING, orderv1.OrderStatus_ORDER_STATUS_CANCELLED} {
		u, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, u.GetUpdate().GetOrder().GetStatus().String())
		if u.GetUpdate().GetType() != orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_STATUS_CHANGED || u.GetUpdate().GetOrder().GetStatus() != want {
			t.Fatalf("updates = %v, want CANCELLING then CANCELLED", seen)
		}
	}
	p, err := s.payments.GetPayment(ada, &paymentv1.GetPaymentRequest{Id: paid.GetPaymentId()})
	if err != nil || p.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED {
		t.Fatalf("the cancelled order's payment = %v, %v; want REFUNDED", p, err)
	}
	again, err := s.orders.CancelOrder(ada, &orderv1.CancelOrderRequest{Id: paid.GetId()})
	if err != nil || again.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED || again.GetOrder().GetRevision() != cancelled.GetOrder().GetRevision() {
		t.Fatalf("cancelling twice = %v, %v", again, err)
	}
	// Subscribing to someone else's order ends the stream with PermissionDenied.
	_, carol := s.account(t, "carol-track")
	other, err := watcher.TrackOrders(carol)
	if err != nil {
		t.Fatal(err)
	}
	_ = other.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: paid.GetId()}})
	if _, err := other.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("tracking someone else's order = %v", err)
	}
}

func flowTrace(t *testing.T, s *stack) {
	_, ada := s.account(t, "ada-trace")
	s.createPaid(t, ada, "o1")
	var traceID string
	// An active account's order asks the user service nothing (its token says it is active: issue
	// 18, the user-check hop), so its trace is the order service's and the payment service's.
	testkit.Eventually(t, 10*time.Second, "a CreateOrder trace reaching payment", func() (bool, string) {
		traces := s.traces.All()
		for id, trace := range traces {
			spans := strings.Join(trace, "\n")
			if strings.Contains(spans, "order meshmart.order.v1.OrderService/CreateOrder") &&
				strings.Contains(spans, "payment meshmart.payment.v1.PaymentService/CreatePayment") {
				traceID = id
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d traces", len(traces))
	})
	t.Logf("trace %s: %v", traceID, s.traces.Trace(traceID))
}

// TestSuspensionWindow is the abuse case of the order service taking an access token's word that
// its account is active (README, "Who may order"): a user suspended mid-session can order with
// the token they hold until it expires, and not a moment later. The user service issues tokens
// for 10 seconds here (5 minutes by default).
func TestSuspensionWindow(t *testing.T) {
	t.Parallel()
	const ttl = 10 * time.Second
	s := startStack(t, testkit.SQLitePath, 1, "MESHMART_TOKEN_TTL="+ttl.String())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bobID, _ := s.signUp(t, "bob")
	login := s.login(t, "bob")
	held := bearer(login.GetAccessToken())
	if _, err := s.users.UpdateUser(s.admin(t), &userv1.UpdateUserRequest{
		User:       &userv1.User{Id: bobID, Status: userv1.UserStatus_USER_STATUS_SUSPENDED},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status"}},
	}); err != nil {
		t.Fatal(err)
	}
	// Within the window: the token held from before the suspension still orders.
	if time.Until(login.GetExpireTime().AsTime()) < ttl/2 {
		t.Fatalf("the test took %v of the token's %v before it could order: too slow to test the window", ttl-time.Until(login.GetExpireTime().AsTime()), ttl)
	}
	s.createPaid(t, held, "in-window")

	// After the window: the held token is refused (expired, past the verifiers' 5 s leeway), its
	// session cannot renew it, and a new login's token says suspended, which the order service
	// checks with the user service: FailedPrecondition, as before the token was trusted.
	time.Sleep(time.Until(login.GetExpireTime().AsTime().Add(6 * time.Second)))
	if _, err := s.orders.CreateOrder(held, orderReq("tok_approve", "after-window")); status.Code(err) != codes.Unauthenticated {
		t.Errorf("CreateOrder with the held token after the window = %v, want Unauthenticated", err)
	}
	if _, err := s.users.RefreshToken(ctx, &userv1.RefreshTokenRequest{RefreshToken: login.GetRefreshToken()}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("RefreshToken of the session the suspension ended = %v, want Unauthenticated", err)
	}
	again := s.logIn(t, "bob")
	if _, err := s.orders.CreateOrder(again, orderReq("tok_approve", "after-window")); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("CreateOrder with a token issued after the suspension = %v, want FailedPrecondition", err)
	}
	list, err := s.orders.ListOrders(again, &orderv1.ListOrdersRequest{})
	if err != nil || len(list.GetOrders()) != 1 {
		t.Errorf("bob's orders = %v, %v; want only the one placed within the window", list, err)
	}
}
