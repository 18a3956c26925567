package remote_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/order/internal/grpcapi"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/remote"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

const (
	alice  = "00000000-0000-4000-8000-00000000a11c"
	secret = "secret-downstream-text"
)

// fakeUsers answers GetUser with user, or with err when it is set; the rest is unimplemented.
type fakeUsers struct {
	userv1.UserServiceClient
	err error
}

func (f fakeUsers) GetUser(_ context.Context, req *userv1.GetUserRequest, _ ...grpc.CallOption) (*userv1.GetUserResponse, error) {
	if f.err != nil {
		return nil, f.err
	}
	return &userv1.GetUserResponse{User: &userv1.User{Id: req.GetId(), Status: userv1.UserStatus_USER_STATUS_ACTIVE}}, nil
}

// fakePayments fails every call with err; the rest is unimplemented.
type fakePayments struct {
	paymentv1.PaymentServiceClient
	err error
}

func (f fakePayments) CreatePayment(context.Context, *paymentv1.CreatePaymentRequest, ...grpc.CallOption) (*paymentv1.CreatePaymentResponse, error) {
	return nil, f.err
}

func (f fakePayments) ListPayments(context.Context, *paymentv1.ListPaymentsRequest, ...grpc.CallOption) (*paymentv1.ListPaymentsResponse, error) {
	return nil, f.err
}

// syncBuffer is a log destination several goroutines may write.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newOrderClient runs the order service over bufconn behind the real chassis, on a fresh SQLite
// file, with the user and payment services faked behind the real remote adapters. It returns a
// client, a context carrying alice's token and the service's log.
func newOrderClient(t *testing.T, users userv1.UserServiceClient, payments paymentv1.PaymentServiceClient) (orderv1.OrderServiceClient, context.Context, *syncBuffer) {
	t.Helper()
	keys := testkit.NewKeys(t)
	orders := testkit.OpenSQLite(t, store.Open)
	logged := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logged, nil))
	svc := order.NewService(orders, remote.NewUsers(users), remote.NewPayments(payments), time.Second)
	if _, err := order.NewCatalog(orders, orders.PageKey).Seed(context.Background(), []order.Product{
		{SKU: "A", Name: "A", Currency: "USD", PriceMinor: 100, Active: true}}); err != nil {
		t.Fatal(err)
	}
	// The transport logs to logged, where the causes it keeps from the client must show.
	cc := testkit.BufconnService(t, "order", keys, &orderv1.OrderService_ServiceDesc, grpcapi.New(svc, log, 20*time.Millisecond))
	return orderv1.NewOrderServiceClient(cc), keys.Context(t, alice, auth.RoleUser), logged
}

// TestDownstreamTextIsNotSent has the user or the payment service fail with a message of its
// own: the order service's client gets a status of the order service, with a message written for
// it and none of the downstream text, which the log keeps.
func TestDownstreamTextIsNotSent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		users    error
		payments error
		want     codes.Code
		pending  bool // the order is kept PENDING, named by a PAYMENT_PENDING ErrorInfo
	}{
		{name: "user service Internal", users: status.Error(codes.Internal, secret), want: codes.Internal},
		{name: "user service Unavailable", users: status.Error(codes.Unavailable, secret), want: codes.Unavailable},
		{name: "user service PermissionDenied", users: status.Error(codes.PermissionDenied, secret), want: codes.Internal},
		{name: "payment service Internal", payments: status.Error(codes.Internal, secret), want: codes.Unavailable, pending: true},
		{name: "payment service DeadlineExceeded", payments: status.Error(codes.DeadlineExceeded, secret), want: codes.Unavailable, pending: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, ctx, logged := newOrderClient(t, fakeUsers{err: tt.users}, fakePayments{err: tt.payments})
			_, err := c.CreateOrder(ctx, &orderv1.CreateOrderRequest{
				Items:              []*orderv1.LineItem{{Sku: "A", Quantity: 1}},
				PaymentMethodToken: "tok_approve", IdempotencyKey: "k1",
			})
			st := status.Convert(err)
			if st.Code() != tt.want {
				t.Errorf("code = %v, want %v (%v)", st.Code(), tt.want, err)
			}
			// The whole status, details included, holds none of the downstream text.
			if sent := st.Proto().String(); strings.Contains(sent, secret) || strings.Contains(sent, "rpc error") {
				t.Errorf("downstream text reached the client: %v", sent)
			}
			var info *errdetails.ErrorInfo
			for _, d := range st.Details() {
				if i, ok := d.(*errdetails.ErrorInfo); ok {
					info = i
				}
			}
			if tt.pending && (info.GetReason() != "PAYMENT_PENDING" || info.GetDomain() != "order.meshmart" || info.GetMetadata()["order_id"] == "") {
				t.Errorf("details = %v, want a PAYMENT_PENDING ErrorInfo naming the order", st.Details())
			}
			if !tt.pending && info != nil {
				t.Errorf("unexpected ErrorInfo %v", info)
			}
			if tt.pending {
				got, err := c.GetOrder(ctx, &orderv1.GetOrderRequest{Id: info.GetMetadata()["order_id"]})
				if err != nil || got.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
					t.Errorf("the order named by the error = %v, %v; want it PENDING", got, err)
				}
			}
			if !strings.Contains(logged.String(), secret) {
				t.Errorf("the downstream error was not logged:\n%s", logged)
			}
		})
	}
}

// recordingPayments records the last CreatePayment and the metadata it went out with.
type recordingPayments struct {
	paymentv1.PaymentServiceClient
	req *paymentv1.CreatePaymentRequest
	md  metadata.MD
}

func (r *recordingPayments) CreatePayment(ctx context.Context, req *paymentv1.CreatePaymentRequest, _ ...grpc.CallOption) (*paymentv1.CreatePaymentResponse, error) {
	r.req, r.md = req, nil
	r.md, _ = metadata.FromOutgoingContext(ctx)
	return &paymentv1.CreatePaymentResponse{Payment: &paymentv1.Payment{Id: "p1", Status: paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED}}, nil
}

// TestBackgroundChargeActsAsTheService: work the order service does on its own (the reconciler)
// carries no token of any account, and names the payer, which the payment service requires of a
// service calling with no user's token.
func TestBackgroundChargeActsAsTheService(t *testing.T) {
	t.Parallel()
	rec := &recordingPayments{}
	p, err := remote.NewPayments(rec).Charge(context.Background(), order.ChargeRequest{
		OrderID: "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90", UserID: alice, Currency: "USD", AmountMinor: 100, Token: "tok_approve", IdempotencyKey: "order:1",
	})
	if err != nil || p.Status != order.PaymentCaptured {
		t.Fatalf("Charge = %+v, %v", p, err)
	}
	if rec.req.GetUserId() != alice {
		t.Errorf("the charge named payer %q, want %q", rec.req.GetUserId(), alice)
	}
	if auth := rec.md.Get("authorization"); len(auth) != 0 {
		t.Errorf("a background charge carried authorization %q", auth)
	}
}

// refundRecorder records the identity the context of the last RefundPayment carried, which is
// what the chassis client's Propagate interceptor would forward as a token.
type refundRecorder struct {
	paymentv1.PaymentServiceClient
	who auth.Identity
}

func (r *refundRecorder) RefundPayment(ctx context.Context, _ *paymentv1.RefundPaymentRequest, _ ...grpc.CallOption) (*paymentv1.RefundPaymentResponse, error) {
	r.who, _ = auth.FromContext(ctx)
	return &paymentv1.RefundPaymentResponse{}, nil
}

// TestRefundActsAsTheService: a refund made while serving a user's CancelOrder goes as the order
// service, with no user's token to forward (RefundPayment admits only it and admins).
func TestRefundActsAsTheService(t *testing.T) {
	t.Parallel()
	rec := &refundRecorder{}
	ctx := auth.NewContext(context.Background(), auth.Identity{Subject: alice, Roles: []string{auth.RoleUser}, Token: "alices-token"})
	if err := remote.NewPayments(rec).Refund(ctx, "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90", "cancel:1", "changed my mind"); err != nil {
		t.Fatal(err)
	}
	if rec.who.Token != "" || rec.who.Subject != "" {
		t.Errorf("the refund went out with the user's identity %+v, want none", rec.who)
	}
}
