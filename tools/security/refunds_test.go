package security

import (
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/testkit"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// The refund attacks of issue 15: orders own refunds. Users refund by cancelling orders; the
// payment service's refunds are for the order service and admins, and an admin's refund reaches
// the order; the order service's idempotency keys are its own.

// followBound is how soon an order must follow a refund made at the payment service: the order
// service reads the payment events every second (-payment-follow-interval), and a loaded
// two-core machine gets generous slack.
const followBound = 5 * time.Second

// paidOrder places the rig's order for a and returns it PAID. An UNAVAILABLE answer (the order
// kept pending: on a loaded machine Consul's 500 ms health checks can briefly leave a replica
// with no payment instance) is repeated with the same key, as the contract tells clients to.
func paidOrder(t *testing.T, r *loadkit.Rig, a loadkit.Account) *orderv1.Order {
	t.Helper()
	req := loadkit.OrderRequest("refunds-" + suffix())
	resp, err := r.Orders.CreateOrder(a.In(callCtx(t)), req)
	for deadline := time.Now().Add(15 * time.Second); status.Code(err) == codes.Unavailable && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
		resp, err = r.Orders.CreateOrder(a.In(callCtx(t)), req)
	}
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if o := resp.GetOrder(); o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID || o.GetPaymentId() == "" {
		t.Fatalf("the order is %v with payment %q, want PAID with its payment", o.GetStatus(), o.GetPaymentId())
	}
	return resp.GetOrder()
}

// getPayment reads a payment as the admin.
func getPayment(t *testing.T, r *loadkit.Rig, admin loadkit.Account, id string) *paymentv1.Payment {
	t.Helper()
	resp, err := r.Payments.GetPayment(admin.In(callCtx(t)), &paymentv1.GetPaymentRequest{Id: id})
	if err != nil {
		t.Fatalf("GetPayment %s: %v", id, err)
	}
	return resp.GetPayment()
}

// asOrderService returns a payment client that presents the order service's real certificate:
// a caller the payment service takes for the order service, as a bug in it, or an operator's
// tool holding its identity, would be.
func asOrderService(t *testing.T, r *loadkit.Rig) paymentv1.PaymentServiceClient {
	t.Helper()
	src, err := identity.LoadFiles(filepath.Join(r.PKI.Dir("order"), identity.CertFile),
		filepath.Join(r.PKI.Dir("order"), identity.KeyFile), r.PKI.BundleFile(), testkit.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	return paymentClientAs(t, r, src, r.Addrs("payment")[0])
}

// paymentClientAs returns a client of the payment instance at addr that presents src's
// certificate and verifies the server with the platform's real trust bundle.
func paymentClientAs(t *testing.T, r *loadkit.Rig, src identity.Source, addr string) paymentv1.PaymentServiceClient {
	t.Helper()
	td := r.PKI.TrustDomain()
	bundle, err := identity.LoadBundle(td, r.PKI.BundleFile(), testkit.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := identity.ClientConfig(src, bundle, td, "payment")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return paymentv1.NewPaymentServiceClient(cc)
}

// Attack: refund and keep the goods. A user refunds their paid order's payment directly, and
// takes the key the order service charges their orders with (order:<id>).
//
// Defence: RefundPayment and CreatePayment admit the order service (and, for refunds, admins)
// only (PERMISSION_DENIED); the user's way to their money is CancelOrder, which refunds the
// order's payment in full and cancels the order. (The policies predate issue 15, so this part
// passed before it; the key scoping behind it is proved by the next tests and
// services/payment/internal/store's TestKeysAreScopedToTheCaller.)
func TestUserRefundsOnlyByCancelling(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		a := r.SignUp(t, "refunder-"+suffix())
		admin := r.LogInAdmin(t)
		o := paidOrder(t, r, a)

		_, err := r.Payments.RefundPayment(a.In(callCtx(t)), &paymentv1.RefundPaymentRequest{
			PaymentId: o.GetPaymentId(), Reason: "keeping the goods", IdempotencyKey: "mine-" + suffix()})
		wantCode(t, "a user's RefundPayment", err, codes.PermissionDenied)
		_, err = r.Payments.CreatePayment(a.In(callCtx(t)), &paymentv1.CreatePaymentRequest{
			OrderId: o.GetId(), Amount: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 1}, PaymentMethodToken: "tok_approve",
			IdempotencyKey: "order:" + o.GetId()})
		wantCode(t, "a user's CreatePayment under the order's key", err, codes.PermissionDenied)
		if p := getPayment(t, r, admin, o.GetPaymentId()); p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
			t.Fatalf("after the refused calls the payment is %v, want CAPTURED", p.GetStatus())
		}

		cancelled, err := r.Orders.CancelOrder(a.In(callCtx(t)), &orderv1.CancelOrderRequest{Id: o.GetId(), Reason: "changed my mind"})
		if err != nil || cancelled.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
			t.Fatalf("CancelOrder = %v, %v; want CANCELLED", cancelled.GetOrder().GetStatus(), err)
		}
		if p := getPayment(t, r, admin, o.GetPaymentId()); p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED ||
			p.GetRefundedAmount().GetMinorUnits() != loadkit.OrderTotal {
			t.Errorf("after CancelOrder the payment is %v with %d refunded, want REFUNDED in full (%d)", p.GetStatus(),
				p.GetRefundedAmount().GetMinorUnits(), loadkit.OrderTotal)
		}
	})
}

// Attack: claim the order service's refund key. A 1-cent refund made under cancel:<order id>,
// the key the order service refunds a cancelled order with, made the order service's own refund
// find that one (FAILED_PRECONDITION, taken for "nothing left to refund"): the order ended
// CANCELLED with 1 cent of its payment refunded.
//
// Defence: idempotency keys are scoped to the caller that wrote them (payment.KeyOwner): the
// admin's cancel:<id> is the admin's, and the order service's refund returns all that is left.
func TestRefundKeyOfAnotherCallerIsNotClaimed(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		a := r.SignUp(t, "squatted-"+suffix())
		admin := r.LogInAdmin(t)
		o := paidOrder(t, r, a)
		_, err := r.Payments.RefundPayment(admin.In(callCtx(t)), &paymentv1.RefundPaymentRequest{
			PaymentId: o.GetPaymentId(), Amount: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 1}, Reason: "goodwill",
			IdempotencyKey: "cancel:" + o.GetId()})
		if err != nil {
			t.Fatalf("the admin's 1-cent refund: %v", err)
		}
		cancelled, err := r.Orders.CancelOrder(a.In(callCtx(t)), &orderv1.CancelOrderRequest{Id: o.GetId()})
		if err != nil || cancelled.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
			t.Fatalf("CancelOrder = %v, %v; want CANCELLED", cancelled.GetOrder().GetStatus(), err)
		}
		p := getPayment(t, r, admin, o.GetPaymentId())
		if p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED || p.GetRefundedAmount().GetMinorUnits() != loadkit.OrderTotal || len(p.GetRefunds()) != 2 {
			t.Errorf("the cancelled order's payment is %v with %d refunded in %d refunds; want REFUNDED in full (%d) in 2",
				p.GetStatus(), p.GetRefundedAmount().GetMinorUnits(), len(p.GetRefunds()), loadkit.OrderTotal)
		}
	})
}

// Attack: make cancellation refund the wrong payment. Compensation refunded "the newest payment
// of the order": with another payment for the same order id made after the order's own (here by
// a caller holding the order service's certificate), cancelling refunded that one and left the
// order's own payment captured.
//
// Defence: the order refunds its own payment, the one whose id it recorded when its charge
// settled.
func TestCancelRefundsTheOrdersOwnPayment(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		a := r.SignUp(t, "two-payments-"+suffix())
		admin := r.LogInAdmin(t)
		o := paidOrder(t, r, a)
		time.Sleep(5 * time.Millisecond) // a strictly newer create time
		stray, err := asOrderService(t, r).CreatePayment(callCtx(t), &paymentv1.CreatePaymentRequest{
			OrderId: o.GetId(), UserId: a.ID, Amount: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 1}, PaymentMethodToken: "tok_approve",
			IdempotencyKey: "stray-" + suffix()})
		if err != nil || stray.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
			t.Fatalf("the other payment for the order = %v, %v", stray.GetPayment().GetStatus(), err)
		}
		if _, err := r.Orders.CancelOrder(a.In(callCtx(t)), &orderv1.CancelOrderRequest{Id: o.GetId()}); err != nil {
			t.Fatalf("CancelOrder: %v", err)
		}
		if own := getPayment(t, r, admin, o.GetPaymentId()); own.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED {
			t.Errorf("the order's own payment is %v after the cancel, want REFUNDED", own.GetStatus())
		}
		if other := getPayment(t, r, admin, stray.GetPayment().GetId()); other.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
			t.Errorf("the other payment is %v after the cancel, want CAPTURED (not the order's to refund)", other.GetStatus())
		}
	})
}

// Attack: order and payment disagree. An admin refunds a paid order's payment in full directly
// at the payment service: the payment became REFUNDED, the order stayed PAID for ever.
//
// Defence: the order service follows the payment event log (ListPaymentEvents, from the position
// it stores) and cancels the order; the bound asserted is followBound.
func TestAdminRefundReachesTheOrder(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		a := r.SignUp(t, "admin-refunded-"+suffix())
		admin := r.LogInAdmin(t)
		o := paidOrder(t, r, a)
		_, err := r.Payments.RefundPayment(admin.In(callCtx(t)), &paymentv1.RefundPaymentRequest{
			PaymentId: o.GetPaymentId(), Reason: "chargeback", IdempotencyKey: "admin-" + suffix()})
		if err != nil {
			t.Fatalf("the admin's refund: %v", err)
		}
		start := time.Now()
		var got *orderv1.Order
		for time.Since(start) < followBound {
			resp, err := r.Orders.GetOrder(a.In(callCtx(t)), &orderv1.GetOrderRequest{Id: o.GetId()})
			if err != nil {
				t.Fatalf("GetOrder: %v", err)
			}
			if got = resp.GetOrder(); got.GetStatus() == orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		took := time.Since(start)
		if got.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED || got.GetPaymentId() != o.GetPaymentId() {
			t.Fatalf("%v after the admin's refund the order is %v (payment %s), want CANCELLED within %v", took.Round(time.Millisecond),
				got.GetStatus(), got.GetPaymentId(), followBound)
		}
		t.Logf("the order followed the admin's refund in %v (bound %v)", took.Round(10*time.Millisecond), followBound)
		if got.GetRevision() != o.GetRevision()+1 {
			t.Errorf("the followed order has revision %d, want %d: one update, PAID -> CANCELLED", got.GetRevision(), o.GetRevision()+1)
		}
	})
}
