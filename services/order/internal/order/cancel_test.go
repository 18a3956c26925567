package order_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

func TestCancel(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tests := []struct {
		name string
		// place makes the order to cancel.
		place   func(t *testing.T, e *env) order.Order
		refunds int // refunds of the order's payment the cancellation must make
	}{
		{"paid, refunded", func(t *testing.T, e *env) order.Order { return e.create(t, alice, tokApprove, "k") }, 1},
		{"payment failed", func(t *testing.T, e *env) order.Order { return e.create(t, alice, tokDecline, "k") }, 0},
		{"pending, never charged", func(t *testing.T, e *env) order.Order {
			e.payments.setDown(true)
			defer e.payments.setDown(false)
			return e.createPending(t, alice, tokApprove, "k")
		}, 0},
		{"pending, charge unsettled: settled first, then refunded", func(t *testing.T, e *env) order.Order {
			return e.createPending(t, alice, tokPendingOnce, "k")
		}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			o := tt.place(t, e)
			got, err := e.svc.Cancel(ctx, alice, o.ID, "changed my mind")
			if err != nil || got.Status != order.StatusCancelled || got.PaymentToken != "" {
				t.Fatalf("Cancel = %+v, %v; want CANCELLED", got, err)
			}
			payment, charged, _ := e.payments.ByKey(ctx, o.UserID, "order:"+o.ID)
			if charged && (got.PaymentID != payment.ID || e.payments.refundCalls(payment.ID) != tt.refunds) {
				t.Errorf("payment %s with %d refunds; want %d refunds of the order's payment %s", got.PaymentID,
					e.payments.refundCalls(payment.ID), tt.refunds, payment.ID)
			}
			if !charged && tt.refunds != 0 {
				t.Errorf("no payment to refund")
			}
			updates, err := e.svc.UpdatesAfter(ctx, []string{o.ID}, 0, 100)
			if n := len(updates); err != nil || n < 2 || updates[n-2].Order.Status != order.StatusCancelling || updates[n-1].Order.Status != order.StatusCancelled {
				t.Errorf("updates = %+v, %v; want CANCELLING then CANCELLED last", updates, err)
			}

			// Cancelling again changes nothing and refunds nothing more.
			again, err := e.svc.Cancel(ctx, alice, o.ID, "again")
			if err != nil || again.Status != order.StatusCancelled || again.Revision != got.Revision {
				t.Errorf("second Cancel = %+v, %v; want the same CANCELLED order", again, err)
			}
			if charged && e.payments.refundCalls(payment.ID) != tt.refunds {
				t.Errorf("the second Cancel refunded again")
			}
		})
	}
}

func TestCancelPermissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	o := e.create(t, alice, tokApprove, "k")
	if _, err := e.svc.Cancel(ctx, bob, o.ID, ""); !errors.Is(err, order.ErrPermissionDenied) {
		t.Errorf("bob cancelling alice's order = %v, want ErrPermissionDenied", err)
	}
	if got := e.stored(t, o.ID); got.Status != order.StatusPaid || e.payments.refundCalls(o.PaymentID) != 0 {
		t.Errorf("after a refused cancel: %v with %d refunds", got.Status, e.payments.refundCalls(o.PaymentID))
	}
	if _, err := e.svc.Cancel(ctx, alice, "00000000-0000-4000-8000-999999999999", ""); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("cancelling a missing order = %v, want ErrNotFound", err)
	}
	if got, err := e.svc.Cancel(ctx, admin, o.ID, "fraud"); err != nil || got.Status != order.StatusCancelled {
		t.Errorf("admin Cancel = %+v, %v; want CANCELLED", got, err)
	}
}

func TestCancelWhileAnotherCallHoldsTheClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.create(t, alice, tokApprove, "k")
	e.claimElsewhere(t, o.ID, order.StatusPaid)
	if _, err := e.svc.Cancel(context.Background(), alice, o.ID, ""); !errors.Is(err, order.ErrBusy) {
		t.Errorf("Cancel while claimed = %v, want ErrBusy", err)
	}
	e.clock.advance(lease)
	if got, err := e.svc.Cancel(context.Background(), alice, o.ID, ""); err != nil || got.Status != order.StatusCancelled {
		t.Errorf("Cancel after the lease = %+v, %v; want CANCELLED", got, err)
	}
}

// With the payment service down the order stays CANCELLING, its claim released; a repeated
// Cancel resumes the compensation once the service is back, and so does the reconciler.
func TestCancelWithThePaymentServiceDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	resumed, reconciled := e.create(t, alice, tokApprove, "k1"), e.create(t, alice, tokApprove, "k2")
	e.payments.setDown(true)
	for _, o := range []order.Order{resumed, reconciled} {
		got, err := e.svc.Cancel(ctx, alice, o.ID, "")
		if err != nil || got.Status != order.StatusCancelling {
			t.Fatalf("Cancel with payments down = %+v, %v; want CANCELLING", got, err)
		}
		if stored := e.stored(t, o.ID); stored.Status != order.StatusCancelling || !stored.LeaseUntil.IsZero() {
			t.Fatalf("stored = %+v; want CANCELLING, unclaimed", stored)
		}
	}
	// Still down: a repeated Cancel leaves it CANCELLING.
	if got, err := e.svc.Cancel(ctx, alice, resumed.ID, ""); err != nil || got.Status != order.StatusCancelling {
		t.Fatalf("repeated Cancel while down = %+v, %v", got, err)
	}
	e.payments.setDown(false)
	if got, err := e.svc.Cancel(ctx, alice, resumed.ID, ""); err != nil || got.Status != order.StatusCancelled || e.payments.refundCalls(resumed.PaymentID) != 1 {
		t.Fatalf("resumed Cancel = %+v, %v, %d refunds; want CANCELLED, refunded once", got, err, e.payments.refundCalls(resumed.PaymentID))
	}
	e.clock.advance(time.Minute)
	if n, err := e.reconcile(ctx, time.Second, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want the other order finished", n, err)
	}
	if got := e.stored(t, reconciled.ID); got.Status != order.StatusCancelled || e.payments.refundCalls(reconciled.PaymentID) != 1 {
		t.Errorf("reconciled = %v with %d refunds; want CANCELLED, refunded once", got.Status, e.payments.refundCalls(reconciled.PaymentID))
	}
}

// TestShippedOrdersCannotBeCancelled drives orders to SHIPPED and COMPLETED in the store (no RPC
// ships orders yet); cancelling them is refused before any payment call: the service that
// cancels has no users or payments, and would panic if it reached them.
func TestShippedOrdersCannotBeCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	bare := order.NewService(e.store, nil, nil, lease)
	for _, st := range []order.Status{order.StatusShipped, order.StatusCompleted} {
		o := e.create(t, alice, tokApprove, fmt.Sprint("k", st))
		shipped := o
		shipped.Status, shipped.Revision = st, o.Revision+1
		if err := e.store.Transition(ctx, shipped, order.StatusPaid); err != nil {
			t.Fatal(err)
		}
		if _, err := bare.Cancel(ctx, alice, o.ID, "too late"); !errors.Is(err, order.ErrNotCancellable) {
			t.Errorf("cancelling a %v order = %v, want ErrNotCancellable", st, err)
		}
		if _, err := bare.Cancel(ctx, bob, o.ID, ""); !errors.Is(err, order.ErrPermissionDenied) {
			t.Errorf("someone else cancelling = %v, want ErrPermissionDenied", err)
		}
		if got := e.stored(t, o.ID); got.Status != st {
			t.Errorf("a refused cancel changed the order: %v, want %v", got.Status, st)
		}
	}
}
