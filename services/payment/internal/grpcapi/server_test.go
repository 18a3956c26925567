package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/grpcapi"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
	"github.com/meshmart/meshmart/services/payment/internal/store"
)

const (
	orderID = "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90"
	alice   = "00000000-0000-4000-8000-00000000a11c"
	bob     = "00000000-0000-4000-8000-000000000b0b"
)

// newClient runs the payment service over bufconn behind the real chassis, on a fresh SQLite
// file, and returns a client with contexts carrying alice's, bob's and an admin's tokens, and
// alice's and bob's as the order service forwards them ("alice via order"): only the order service
// may create payments.
func newClient(t *testing.T) (paymentv1.PaymentServiceClient, map[string]context.Context) {
	t.Helper()
	return newReplica(t, testkit.SQLitePath(t), testkit.NewKeys(t))
}

// newReplica runs one replica of the payment service over bufconn on the SQLite file at path,
// trusting access tokens signed with keys.
func newReplica(t *testing.T, path string, keys testkit.Keys) (paymentv1.PaymentServiceClient, map[string]context.Context) {
	t.Helper()
	c, as, _ := newReplicaAndStore(t, path, keys)
	return c, as
}

// newClientAndStore is newClient that also returns the store, for a test to break.
func newClientAndStore(t *testing.T) (paymentv1.PaymentServiceClient, map[string]context.Context, *store.Payments) {
	t.Helper()
	return newReplicaAndStore(t, testkit.SQLitePath(t), testkit.NewKeys(t))
}

func newReplicaAndStore(t *testing.T, path string, keys testkit.Keys) (paymentv1.PaymentServiceClient, map[string]context.Context, *store.Payments) {
	t.Helper()
	payments, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { payments.Close() })
	api := grpcapi.New(payment.NewService(payments, payment.Simulator{}, 200*time.Millisecond), testkit.Logger(t), 20*time.Millisecond)
	cc := testkit.BufconnService(t, "payment", keys, &paymentv1.PaymentService_ServiceDesc, api, server.WithPeerService(testPeerService))
	return paymentv1.NewPaymentServiceClient(cc), map[string]context.Context{
		"alice": keys.Context(t, alice, auth.RoleUser), "bob": keys.Context(t, bob, auth.RoleUser),
		"admin":           keys.Context(t, "00000000-0000-4000-8000-0000000ad111", auth.RoleAdmin),
		"alice via order": viaService(keys.Context(t, alice, auth.RoleUser), "order"),
		"bob via order":   viaService(keys.Context(t, bob, auth.RoleUser), "order"),
	}, payments
}

// testPeerServiceKey is the request header in which these tests name the service a call comes
// from, standing in for the verified client certificate a real connection presents.
const testPeerServiceKey = "x-test-peer-service"

func testPeerService(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, testPeerServiceKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// viaService makes ctx's calls come from the meshmart service called service.
func viaService(ctx context.Context, service string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, testPeerServiceKey, service)
}

func usd(n int64) *moneyv1.Money { return &moneyv1.Money{CurrencyCode: "USD", MinorUnits: n} }

func chargeReq(token, key string, amount int64) *paymentv1.CreatePaymentRequest {
	return &paymentv1.CreatePaymentRequest{OrderId: orderID, Amount: usd(amount), PaymentMethodToken: token, IdempotencyKey: key}
}

func code(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("got %v, want %v", err, want)
	}
}

func TestChargesAndRefunds(t *testing.T) {
	t.Parallel()
	c, as := newClient(t)
	paid, err := c.CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, "k1", 1000))
	if err != nil || paid.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
		t.Fatalf("approve = %v, %v", paid, err)
	}
	declined, err := c.CreatePayment(as["alice via order"], chargeReq(payment.TokenInsufficientFunds, "k2", 1000))
	if err != nil || declined.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED ||
		declined.GetPayment().GetDeclineReason() != paymentv1.DeclineReason_DECLINE_REASON_INSUFFICIENT_FUNDS {
		t.Fatalf("decline = %v, %v", declined, err)
	}
	again, err := c.CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, "k1", 1000))
	if err != nil || again.GetPayment().GetId() != paid.GetPayment().GetId() {
		t.Fatalf("repeat = %v, %v", again, err)
	}
	_, err = c.CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, "k1", 2000))
	code(t, err, codes.FailedPrecondition)
	_, err = c.CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, "k3", 0))
	code(t, err, codes.InvalidArgument)
	_, err = c.CreatePayment(context.Background(), chargeReq(payment.TokenApprove, "k4", 10))
	code(t, err, codes.Unauthenticated)

	id := paid.GetPayment().GetId()
	refund := func(ctx context.Context, amount *moneyv1.Money, key string) (*paymentv1.RefundPaymentResponse, error) {
		return c.RefundPayment(ctx, &paymentv1.RefundPaymentRequest{PaymentId: id, Amount: amount, IdempotencyKey: key, Reason: "test"})
	}
	r, err := refund(as["alice via order"], usd(400), "r1")
	if err != nil || r.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED || r.GetRefund().GetAmount().GetMinorUnits() != 400 {
		t.Fatalf("partial refund = %v, %v", r, err)
	}
	_, err = refund(as["alice via order"], usd(700), "r2")
	code(t, err, codes.FailedPrecondition)
	_, err = refund(as["alice via order"], &moneyv1.Money{CurrencyCode: "EUR", MinorUnits: 1}, "r3")
	code(t, err, codes.InvalidArgument)
	_, err = refund(as["bob"], nil, "r4")
	code(t, err, codes.PermissionDenied)
	full, err := refund(as["admin"], nil, "r5")
	if err != nil || full.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED || len(full.GetPayment().GetRefunds()) != 2 {
		t.Fatalf("full refund = %v, %v", full, err)
	}

	_, err = c.GetPayment(as["bob"], &paymentv1.GetPaymentRequest{Id: id})
	code(t, err, codes.PermissionDenied)
	_, err = c.GetPayment(as["alice"], &paymentv1.GetPaymentRequest{Id: "00000000-0000-4000-8000-999999999999"})
	code(t, err, codes.NotFound)
	got, err := c.GetPayment(as["admin"], &paymentv1.GetPaymentRequest{Id: id})
	if err != nil || got.GetPayment().GetRefundedAmount().GetMinorUnits() != 1000 {
		t.Fatalf("GetPayment = %v, %v", got, err)
	}
}

// TestCallerPolicies runs the contract's policies through the real chain: only the order service
// creates payments, and only it or an admin refunds them; a user calling either directly is
// PermissionDenied, before the request is even validated.
func TestCallerPolicies(t *testing.T) {
	t.Parallel()
	c, as := newClient(t)
	paid, err := c.CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, "k1", 1000))
	if err != nil {
		t.Fatal(err)
	}
	refund := &paymentv1.RefundPaymentRequest{PaymentId: paid.GetPayment().GetId(), Amount: usd(1), IdempotencyKey: "r1", Reason: "test"}
	tests := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"a user creating a payment", func() error {
			_, err := c.CreatePayment(as["alice"], chargeReq(payment.TokenApprove, "k2", 1000))
			return err
		}, codes.PermissionDenied},
		{"an admin creating a payment", func() error {
			_, err := c.CreatePayment(as["admin"], chargeReq(payment.TokenApprove, "k3", 1000))
			return err
		}, codes.PermissionDenied},
		{"another service creating a payment", func() error {
			_, err := c.CreatePayment(viaService(as["alice"], "user"), chargeReq(payment.TokenApprove, "k4", 1000))
			return err
		}, codes.PermissionDenied},
		{"nobody creating a payment", func() error {
			_, err := c.CreatePayment(context.Background(), chargeReq(payment.TokenApprove, "k5", 1000))
			return err
		}, codes.Unauthenticated},
		{"a user creating an invalid payment", func() error {
			_, err := c.CreatePayment(as["alice"], chargeReq(payment.TokenApprove, "k6", 0))
			return err
		}, codes.PermissionDenied},
		{"a user refunding their own payment", func() error {
			_, err := c.RefundPayment(as["alice"], refund)
			return err
		}, codes.PermissionDenied},
		{"the order service refunding", func() error {
			_, err := c.RefundPayment(as["alice via order"], refund)
			return err
		}, codes.OK},
		{"an admin refunding", func() error {
			r := &paymentv1.RefundPaymentRequest{PaymentId: refund.GetPaymentId(), Amount: usd(1), IdempotencyKey: "r2", Reason: "test"}
			_, err := c.RefundPayment(as["admin"], r)
			return err
		}, codes.OK},
		{"a user reading their payment", func() error {
			_, err := c.GetPayment(as["alice"], &paymentv1.GetPaymentRequest{Id: refund.GetPaymentId()})
			return err
		}, codes.OK},
		{"a user reading the event log", func() error {
			_, err := c.ListPaymentEvents(as["alice"], &paymentv1.ListPaymentEventsRequest{})
			return err
		}, codes.PermissionDenied},
		{"an admin reading the event log", func() error {
			_, err := c.ListPaymentEvents(as["admin"], &paymentv1.ListPaymentEventsRequest{})
			return err
		}, codes.PermissionDenied},
		{"the order service reading the event log from a negative seq", func() error {
			_, err := c.ListPaymentEvents(viaService(context.Background(), "order"), &paymentv1.ListPaymentEventsRequest{AfterSeq: -1})
			return err
		}, codes.InvalidArgument},
		{"the order service reading the event log", func() error {
			resp, err := c.ListPaymentEvents(viaService(context.Background(), "order"), &paymentv1.ListPaymentEventsRequest{PageSize: 2})
			if err == nil && (len(resp.GetEvents()) != 2 || resp.GetEvents()[0].GetSeq() >= resp.GetEvents()[1].GetSeq() ||
				resp.GetEvents()[0].GetPayment().GetId() != paid.GetPayment().GetId()) {
				return status.Errorf(codes.Unknown, "events = %v; want the first two, in seq order", resp.GetEvents())
			}
			return err
		}, codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); status.Code(err) != tt.want {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestListAndWatch(t *testing.T) {
	t.Parallel()
	c, as := newClient(t)
	ctx, cancel := context.WithTimeout(as["alice"], 10*time.Second)
	defer cancel()
	watch, err := c.WatchPayments(ctx, &paymentv1.WatchPaymentsRequest{OrderId: orderID})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the stream takes its starting point
	for i, token := range []string{payment.TokenApprove, payment.TokenDecline, payment.TokenProcessorError} {
		if _, err := c.CreatePayment(as["alice via order"], chargeReq(token, token, int64(100+i))); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CreatePayment(as["bob via order"], chargeReq(payment.TokenApprove, "bob", 5)); err != nil {
		t.Fatal(err)
	}
	want := []paymentv1.PaymentEventType{
		paymentv1.PaymentEventType_PAYMENT_EVENT_TYPE_AUTHORIZED, paymentv1.PaymentEventType_PAYMENT_EVENT_TYPE_CAPTURED,
		paymentv1.PaymentEventType_PAYMENT_EVENT_TYPE_DECLINED, paymentv1.PaymentEventType_PAYMENT_EVENT_TYPE_FAILED,
	}
	for i, w := range want {
		resp, err := watch.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetEvent().GetType() != w || resp.GetEvent().GetPayment().GetUserId() != alice {
			t.Errorf("event %d = %v, want %v of alice", i, resp.GetEvent(), w)
		}
	}
	cancel()
	if _, err := watch.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("after cancel: %v", err)
	}

	var n int
	token := ""
	for {
		page, err := c.ListPayments(as["alice"], &paymentv1.ListPaymentsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		n += len(page.GetPayments())
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if n != 3 {
		t.Errorf("alice listed %d payments, want 3", n)
	}
	_, err = c.ListPayments(as["alice"], &paymentv1.ListPaymentsRequest{PageToken: "garbage"})
	code(t, err, codes.InvalidArgument)
	_, err = c.ListPayments(as["alice"], &paymentv1.ListPaymentsRequest{UserId: bob})
	code(t, err, codes.PermissionDenied)
	all, err := c.ListPayments(as["admin"], &paymentv1.ListPaymentsRequest{})
	if err != nil || len(all.GetPayments()) != 4 {
		t.Errorf("admin listed %d, %v", len(all.GetPayments()), err)
	}
}
