package order_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

const grace = time.Minute

// pendingOrders places n orders left PENDING by an unreachable payment service, which is back
// when it returns.
func (e *env) pendingOrders(t *testing.T, n int) []order.Order {
	t.Helper()
	e.payments.setDown(true)
	defer e.payments.setDown(false)
	var os []order.Order
	for i := range n {
		os = append(os, e.createPending(t, alice, tokApprove, fmt.Sprint("k", i)))
		e.clock.advance(time.Microsecond) // oldest first is well defined
	}
	return os
}

func TestReconcileSettlesOnlyWhatIsDue(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	o := e.pendingOrders(t, 1)[0]
	e.clock.advance(grace / 2)
	if n, err := e.svc.Reconcile(ctx, grace, 10); err != nil || n != 0 || e.stored(t, o.ID).Status != order.StatusPending {
		t.Fatalf("Reconcile within the grace = %d, %v; want nothing touched", n, err)
	}
	if e.payments.chargeCalls() != 0 {
		t.Fatalf("an order within its grace was charged")
	}
	e.clock.advance(grace)
	if n, err := e.svc.Reconcile(ctx, grace, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile after the grace = %d, %v; want 1", n, err)
	}
	if got := e.stored(t, o.ID); got.Status != order.StatusPaid || got.PaymentToken != "" {
		t.Errorf("reconciled order = %+v; want PAID, its token cleared", got)
	}
	if n, err := e.svc.Reconcile(ctx, grace, 10); err != nil || n != 0 {
		t.Errorf("Reconcile with nothing due = %d, %v", n, err)
	}
}

// An order whose payment is still unsettled stays PENDING and is not counted as finished; a
// declined one is finished as PAYMENT_FAILED.
func TestReconcileCountsOnlyFinishedOrders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.payments.setDown(true)
	declined := e.createPending(t, alice, tokDecline, "d")
	e.payments.setDown(false)
	unsettled := e.createPending(t, alice, tokPendingOnce, "p") // the payment service now knows a PENDING charge
	e.clock.advance(2 * grace)
	// The declined order is finished; the charge of the other one is settled by the repeat.
	if n, err := e.svc.Reconcile(ctx, grace, 10); err != nil || n != 2 {
		t.Fatalf("Reconcile = %d, %v; want 2", n, err)
	}
	if got := e.stored(t, declined.ID); got.Status != order.StatusPaymentFailed {
		t.Errorf("declined order = %v, want PAYMENT_FAILED", got.Status)
	}
	if got := e.stored(t, unsettled.ID); got.Status != order.StatusPaid {
		t.Errorf("unsettled order = %v, want PAID", got.Status)
	}

	e.payments.setDown(true)
	down := e.createPending(t, alice, tokApprove, "down")
	e.clock.advance(2 * grace)
	if n, err := e.svc.Reconcile(ctx, grace, 10); err != nil || n != 0 {
		t.Errorf("Reconcile with payments down = %d, %v; want 0", n, err)
	}
	if got := e.stored(t, down.ID); got.Status != order.StatusPending || !got.LeaseUntil.IsZero() {
		t.Errorf("order after a failed reconcile = %+v; want PENDING, unclaimed", got)
	}
}

func TestReconcileSkipsOrdersHeldByAnotherReplica(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	os := e.pendingOrders(t, 2)
	e.clock.advance(2 * grace)
	e.claimElsewhere(t, os[0].ID, order.StatusPending)
	if n, err := e.svc.Reconcile(ctx, grace, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want only the unheld order", n, err)
	}
	if got := e.stored(t, os[0].ID); got.Status != order.StatusPending {
		t.Errorf("the held order = %v, want PENDING", got.Status)
	}
	// The other replica died: once its lease has run out the order is settled here.
	e.clock.advance(lease)
	if n, err := e.svc.Reconcile(ctx, grace, 10); err != nil || n != 1 || e.stored(t, os[0].ID).Status != order.StatusPaid {
		t.Errorf("Reconcile after the lease = %d, %v; want the order PAID", n, err)
	}
}

func TestReconcileRespectsTheLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	os := e.pendingOrders(t, 3)
	e.clock.advance(2 * grace)
	if n, err := e.svc.Reconcile(ctx, grace, 2); err != nil || n != 2 || e.payments.chargeCalls() != 2 {
		t.Fatalf("Reconcile(limit 2) = %d, %v, %d charges; want 2", n, err, e.payments.chargeCalls())
	}
	// Oldest first: the newest is the one left.
	if got := e.stored(t, os[2].ID); got.Status != order.StatusPending {
		t.Errorf("the newest order = %v, want PENDING still", got.Status)
	}
	if n, err := e.svc.Reconcile(ctx, grace, 2); err != nil || n != 1 {
		t.Errorf("second Reconcile = %d, %v; want 1", n, err)
	}
}

func TestReconcileStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	os := e.pendingOrders(t, 3)
	e.clock.advance(2 * grace)

	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.svc.Reconcile(done, grace, 10); err == nil || e.payments.chargeCalls() != 0 {
		t.Errorf("Reconcile on a cancelled context = %v with %d charges; want an error and nothing charged", err, e.payments.chargeCalls())
	}

	// Cancelled during the first charge: that order is still finished (its write is detached
	// from the caller), the loop stops before the next one.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.payments.onCharge = cancel
	n, err := e.svc.Reconcile(ctx, grace, 10)
	if !errors.Is(err, context.Canceled) || n != 1 || e.payments.chargeCalls() != 1 {
		t.Fatalf("Reconcile cancelled mid-way = %d, %v with %d charges; want 1, context.Canceled, 1 charge", n, err, e.payments.chargeCalls())
	}
	if e.stored(t, os[0].ID).Status != order.StatusPaid || e.stored(t, os[1].ID).Status != order.StatusPending {
		t.Errorf("orders after the cancel: %v, %v; want PAID, PENDING", e.stored(t, os[0].ID).Status, e.stored(t, os[1].ID).Status)
	}
}
