package order_test

import (
	"context"
	"testing"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

// Cancelling refunds the order's own payment, the one it recorded, even when a newer payment
// exists for the same order id (issue 15: compensation refunded "the newest payment of the
// order").
func TestCancelRefundsTheOrdersOwnPayment(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	o := e.create(t, alice, tokApprove, "k")
	stray, err := e.payments.Charge(ctx, order.ChargeRequest{OrderID: o.ID, UserID: alice.Subject, Currency: "USD",
		AmountMinor: 1, Token: tokApprove, IdempotencyKey: "stray"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.svc.Cancel(ctx, alice, o.ID, "")
	if err != nil || got.Status != order.StatusCancelled || got.PaymentID != o.PaymentID {
		t.Fatalf("Cancel = %+v, %v; want CANCELLED with its payment %s", got, err, o.PaymentID)
	}
	if own, other := e.payments.refundCalls(o.PaymentID), e.payments.refundCalls(stray.ID); own != 1 || other != 0 {
		t.Errorf("refunds: %d of the order's payment, %d of the other; want 1 and 0", own, other)
	}
}

// An admin's full refund at the payment service reaches the order: FollowPayments cancels it,
// with an update TrackOrders streams; a partial refund leaves it PAID. The position is kept in
// the store, so another replica (or a restart) resumes after it.
func TestFollowPaymentsCancelsAnOrderRefundedElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	full, partial := e.create(t, alice, tokApprove, "full"), e.create(t, alice, tokApprove, "partial")
	e.payments.refundElsewhere(full.PaymentID, true)
	e.payments.refundElsewhere(partial.PaymentID, false)

	if n, err := e.svc.FollowPayments(ctx, 100); err != nil || n != 4 {
		t.Fatalf("FollowPayments = %d, %v; want the 4 events handled", n, err)
	}
	if got := e.stored(t, full.ID); got.Status != order.StatusCancelled || got.PaymentID != full.PaymentID || got.Revision != full.Revision+1 {
		t.Errorf("the order refunded in full = %+v; want CANCELLED, one revision on", got)
	}
	if got := e.stored(t, partial.ID); got.Status != order.StatusPaid {
		t.Errorf("the order refunded in part = %v; want PAID", got.Status)
	}
	updates, err := e.svc.UpdatesAfter(ctx, []string{full.ID}, 0, 100)
	if n := len(updates); err != nil || n == 0 || updates[n-1].Order.Status != order.StatusCancelled || updates[n-1].PreviousStatus != order.StatusPaid {
		t.Errorf("updates = %+v, %v; want PAID -> CANCELLED last", updates, err)
	}
	if seq, err := e.store.PaymentFeedSeq(ctx); err != nil || seq != 4 {
		t.Errorf("the stored position = %d, %v; want 4", seq, err)
	}

	// Another replica on the same store starts after the events already handled.
	other := order.NewService(e.store, e.users, e.payments, lease)
	if n, err := other.FollowPayments(ctx, 100); err != nil || n != 0 {
		t.Errorf("another replica's FollowPayments = %d, %v; want nothing new", n, err)
	}
	// Cancelling the followed order refunds nothing more.
	if got, err := e.svc.Cancel(ctx, alice, full.ID, ""); err != nil || got.Status != order.StatusCancelled || e.payments.refundCalls(full.PaymentID) != 0 {
		t.Errorf("Cancel after the follow = %+v, %v, %d refunds", got, err, e.payments.refundCalls(full.PaymentID))
	}
}

// With the payment service down FollowPayments fails and keeps its position.
func TestFollowPaymentsWithThePaymentServiceDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	o := e.create(t, alice, tokApprove, "k")
	e.payments.refundElsewhere(o.PaymentID, true)
	e.payments.setDown(true)
	if n, err := e.svc.FollowPayments(ctx, 100); err == nil || n != 0 {
		t.Fatalf("FollowPayments with payments down = %d, %v; want an error", n, err)
	}
	if seq, _ := e.store.PaymentFeedSeq(ctx); seq != 0 {
		t.Errorf("the position moved to %d", seq)
	}
	e.payments.setDown(false)
	if n, err := e.svc.FollowPayments(ctx, 1); err != nil || n != 1 {
		t.Fatalf("FollowPayments(limit 1) = %d, %v", n, err)
	}
	if n, err := e.svc.FollowPayments(ctx, 100); err != nil || n != 1 || e.stored(t, o.ID).Status != order.StatusCancelled {
		t.Errorf("FollowPayments = %d, %v, order %v; want the refund handled, CANCELLED", n, err, e.stored(t, o.ID).Status)
	}
}

// A pending order whose charge captured and was then refunded in full before the order recorded
// the capture ends CANCELLED, whether the feed or the settling charge sees it first.
func TestPendingOrderRefundedBeforeItSettled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	capturedElsewhere := func(t *testing.T, e *env) order.Order {
		o := e.createPending(t, alice, tokPendingOnce, "k")
		p, err := e.payments.Charge(ctx, order.ChargeRequest{OrderID: o.ID, UserID: alice.Subject, IdempotencyKey: "order:" + o.ID})
		if err != nil || p.Status != order.PaymentCaptured {
			t.Fatalf("capture = %+v, %v", p, err)
		}
		e.payments.refundElsewhere(p.ID, true)
		return o
	}
	t.Run("feed first", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		o := capturedElsewhere(t, e)
		if _, err := e.svc.FollowPayments(ctx, 100); err != nil {
			t.Fatal(err)
		}
		if got := e.stored(t, o.ID); got.Status != order.StatusCancelled || got.PaymentID == "" {
			t.Errorf("order = %+v; want CANCELLED with its payment", got)
		}
	})
	t.Run("charge first", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		o := capturedElsewhere(t, e)
		got, err := e.svc.Create(ctx, alice, input(tokPendingOnce, "k"))
		if err != nil || got.ID != o.ID || got.Status != order.StatusCancelled {
			t.Errorf("the settling retry = %+v, %v; want the order CANCELLED", got, err)
		}
	})
}
