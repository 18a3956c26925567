package payment_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

// A meshmart service proved by its certificate (mutual TLS): alone, as the order service's
// reconciler calls, or forwarding alice's token, as it calls while serving her.
var (
	orderService  = auth.Identity{Service: "order"}
	orderForAlice = auth.Identity{Service: "order", Subject: alice.Subject, Roles: alice.Roles}
	anonymous     = auth.Identity{}
)

// TestServiceCallers: a service may act for any user, but must say for whom when it carries no
// user's token; it never gets every payment by leaving a filter out.
func TestServiceCallers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("service without user_id", func(t *testing.T) {
		t.Parallel()
		svc, _, _ := newService(t, time.Second)
		if _, err := svc.Charge(ctx, orderService, charge(payment.TokenApprove, "k")); !errors.Is(err, payment.ErrPayerRequired) || invalidField(err) != "user_id" {
			t.Errorf("a service charging nobody = %v, want an invalid user_id", err)
		}
		if _, err := svc.Charge(ctx, anonymous, charge(payment.TokenApprove, "k")); !errors.Is(err, payment.ErrPermissionDenied) {
			t.Errorf("a caller with no identity charging = %v, want ErrPermissionDenied", err)
		}
		if got, _, err := svc.List(ctx, admin, payment.Filter{}, 10, ""); err != nil || len(got) != 0 {
			t.Errorf("refused charges left payments: %v, %v", got, err)
		}
	})

	t.Run("service only", func(t *testing.T) {
		t.Parallel()
		svc, proc, _ := newService(t, time.Second)
		in := charge(payment.TokenApprove, "order:1")
		in.UserID = alice.Subject
		p, err := svc.Charge(ctx, orderService, in)
		if err != nil || p.UserID != alice.Subject || p.Status != payment.StatusCaptured {
			t.Fatalf("the service charging alice = %+v, %v", p, err)
		}
		// The service's call while serving alice (her token forwarded) finds the same payment:
		// keys are scoped to the caller, the order service in both.
		again, err := svc.Charge(ctx, orderForAlice, charge(payment.TokenApprove, "order:1"))
		if err != nil || again.ID != p.ID || proc.Calls(p.ID) != 1 {
			t.Errorf("the service's retry with alice's token = %+v, %v (%d processor calls); want the same payment, one call", again, err, proc.Calls(p.ID))
		}
		// Alice's own call with the key is hers alone: it never matches the service's payment.
		if hers, err := svc.Charge(ctx, alice, charge(payment.TokenApprove, "order:1")); err != nil || hers.ID == p.ID {
			t.Errorf("alice's call with the service's key = %+v, %v; want a payment of her own", hers, err)
		}
		if got, err := svc.Get(ctx, orderService, p.ID); err != nil || got.ID != p.ID {
			t.Errorf("the service's Get = %+v, %v", got, err)
		}
		for name, f := range map[string]payment.Filter{"by order": {OrderID: orderID}, "by user": {UserID: alice.Subject}} {
			got, _, err := svc.List(ctx, orderService, f, 10, "")
			if err != nil || len(got) != 2 {
				t.Errorf("the service listing %s = %v, %v; want alice's two payments", name, got, err)
			}
		}
		if _, _, err := svc.List(ctx, orderService, payment.Filter{}, 10, ""); !errors.Is(err, payment.ErrFilterRequired) || invalidField(err) != "user_id" {
			t.Errorf("the service listing with no filter = %v, want ErrFilterRequired", err)
		}
		if err := svc.Watch(ctx, orderService, payment.Filter{}, svc.EventFeed(time.Second, testkit.DiscardLogger()), nil); !errors.Is(err, payment.ErrFilterRequired) {
			t.Errorf("the service watching with no filter = %v, want ErrFilterRequired", err)
		}
		if _, _, err := svc.List(ctx, anonymous, payment.Filter{OrderID: orderID}, 10, ""); !errors.Is(err, payment.ErrPermissionDenied) {
			t.Errorf("a caller with no identity listing = %v, want ErrPermissionDenied", err)
		}
		refunded, _, err := svc.Refund(ctx, orderService, payment.RefundInput{PaymentID: p.ID, IdempotencyKey: "cancel:1", Reason: "cancelled"})
		if err != nil || refunded.Status != payment.StatusRefunded {
			t.Errorf("the service's refund = %+v, %v", refunded, err)
		}
	})

	t.Run("service with a user", func(t *testing.T) {
		t.Parallel()
		svc, _, _ := newService(t, time.Second)
		// With no user_id the forwarded user pays.
		p, err := svc.Charge(ctx, orderForAlice, charge(payment.TokenApprove, "k"))
		if err != nil || p.UserID != alice.Subject {
			t.Fatalf("the service charging for alice = %+v, %v; want alice's payment", p, err)
		}
		// A service may name another payer; alice herself may not.
		forBob := charge(payment.TokenApprove, "k")
		forBob.UserID = bob.Subject
		if q, err := svc.Charge(ctx, orderForAlice, forBob); err != nil || q.UserID != bob.Subject || q.ID == p.ID {
			t.Errorf("the service naming bob = %+v, %v; want a payment of bob's", q, err)
		}
		if _, err := svc.Charge(ctx, alice, forBob); !errors.Is(err, payment.ErrPermissionDenied) {
			t.Errorf("alice naming bob = %v, want ErrPermissionDenied", err)
		}
		// With no user filter the list is the forwarded user's.
		got, _, err := svc.List(ctx, orderForAlice, payment.Filter{}, 10, "")
		if err != nil || len(got) != 1 || got[0].ID != p.ID {
			t.Errorf("the service listing for alice = %v, %v; want alice's one payment", got, err)
		}
		if got, _, err := svc.List(ctx, orderForAlice, payment.Filter{UserID: bob.Subject}, 10, ""); err != nil || len(got) != 1 || got[0].UserID != bob.Subject {
			t.Errorf("the service listing bob's = %v, %v", got, err)
		}
	})
}
