package order_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

const grace = time.Minute

// policy is the reconciler's policy in these tests: one worker, so that attempts happen in order.
func policy(grace time.Duration, limit int) order.ReconcilePolicy {
	p := order.DefaultReconcilePolicy()
	p.Grace, p.Limit, p.PerUser, p.Workers = grace, limit, limit, 1
	return p
}

// reconciler returns a reconciler of e's orders with policy p whose backoff delays are their
// ceilings minus 1 µs (the largest the jitter can draw), so that the tests know them.
func (e *env) reconciler(t *testing.T, p order.ReconcilePolicy) (*order.Reconciler, *observer) {
	t.Helper()
	obs := &observer{attempts: map[order.Outcome]int{}}
	r, err := order.NewReconciler(e.svc, p, slog.New(slog.DiscardHandler), obs)
	if err != nil {
		t.Fatal(err)
	}
	order.SetJitter(r, func(n time.Duration) time.Duration { return n - time.Microsecond })
	return r, obs
}

// reconcile makes one pass with policy(grace, limit) and reports how many orders it finished.
func (e *env) reconcile(ctx context.Context, grace time.Duration, limit int) (int, error) {
	r, err := order.NewReconciler(e.svc, policy(grace, limit), slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return 0, err
	}
	res, err := r.Pass(ctx)
	return res.Settled + res.GivenUp, err
}

// observer records what a reconciler tells it.
type observer struct {
	mu        sync.Mutex
	attempts  map[order.Outcome]int
	unsettled []int64
}

func (o *observer) Attempted(out order.Outcome) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.attempts[out]++
}

func (o *observer) Unsettled(counts []int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.unsettled = counts
}

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
	if n, err := e.reconcile(ctx, grace, 10); err != nil || n != 0 || e.stored(t, o.ID).Status != order.StatusPending {
		t.Fatalf("Reconcile within the grace = %d, %v; want nothing touched", n, err)
	}
	if e.payments.chargeCalls() != 0 {
		t.Fatalf("an order within its grace was charged")
	}
	e.clock.advance(grace)
	if n, err := e.reconcile(ctx, grace, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile after the grace = %d, %v; want 1", n, err)
	}
	if got := e.stored(t, o.ID); got.Status != order.StatusPaid || got.PaymentToken != "" {
		t.Errorf("reconciled order = %+v; want PAID, its token cleared", got)
	}
	if n, err := e.reconcile(ctx, grace, 10); err != nil || n != 0 {
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
	if n, err := e.reconcile(ctx, grace, 10); err != nil || n != 2 {
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
	if n, err := e.reconcile(ctx, grace, 10); err != nil || n != 0 {
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
	if n, err := e.reconcile(ctx, grace, 10); err != nil || n != 1 {
		t.Fatalf("Reconcile = %d, %v; want only the unheld order", n, err)
	}
	if got := e.stored(t, os[0].ID); got.Status != order.StatusPending {
		t.Errorf("the held order = %v, want PENDING", got.Status)
	}
	// The other replica died: once its lease has run out the order is settled here.
	e.clock.advance(lease)
	if n, err := e.reconcile(ctx, grace, 10); err != nil || n != 1 || e.stored(t, os[0].ID).Status != order.StatusPaid {
		t.Errorf("Reconcile after the lease = %d, %v; want the order PAID", n, err)
	}
}

func TestReconcileRespectsTheLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	os := e.pendingOrders(t, 3)
	e.clock.advance(2 * grace)
	if n, err := e.reconcile(ctx, grace, 2); err != nil || n != 2 || e.payments.chargeCalls() != 2 {
		t.Fatalf("Reconcile(limit 2) = %d, %v, %d charges; want 2", n, err, e.payments.chargeCalls())
	}
	// Oldest first: the newest is the one left.
	if got := e.stored(t, os[2].ID); got.Status != order.StatusPending {
		t.Errorf("the newest order = %v, want PENDING still", got.Status)
	}
	if n, err := e.reconcile(ctx, grace, 2); err != nil || n != 1 {
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
	if _, err := e.reconcile(done, grace, 10); err == nil || e.payments.chargeCalls() != 0 {
		t.Errorf("Reconcile on a cancelled context = %v with %d charges; want an error and nothing charged", err, e.payments.chargeCalls())
	}

	// Cancelled during the first charge: that order is still finished (its write is detached
	// from the caller), the loop stops before the next one.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.payments.onCharge = cancel
	n, err := e.reconcile(ctx, grace, 10)
	if !errors.Is(err, context.Canceled) || n != 1 || e.payments.chargeCalls() != 1 {
		t.Fatalf("Reconcile cancelled mid-way = %d, %v with %d charges; want 1, context.Canceled, 1 charge", n, err, e.payments.chargeCalls())
	}
	if e.stored(t, os[0].ID).Status != order.StatusPaid || e.stored(t, os[1].ID).Status != order.StatusPending {
		t.Errorf("orders after the cancel: %v, %v; want PAID, PENDING", e.stored(t, os[0].ID).Status, e.stored(t, os[1].ID).Status)
	}
}

// A failed order is backed off: the delay before attempt n+1 is drawn below Backoff·2^(n-1),
// capped at MaxBackoff, and the order is not attempted before; the jitter is uniform over the
// whole interval (full jitter), never past it.
func TestReconcileBacksOffFailedOrders(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	o := e.pendingOrders(t, 1)[0]
	e.clock.advance(2 * grace)
	p := policy(grace, 10)
	p.Backoff, p.MaxBackoff, p.MaxAttempts = time.Second, 5*time.Second, 100
	r, obs := e.reconciler(t, p)
	e.payments.setDown(true)
	for n, ceiling := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		attemptAt := e.clock.now()
		if res, err := r.Pass(ctx); err != nil || res.Failed != 1 {
			t.Fatalf("attempt %d = %+v, %v; want one failure", n+1, res, err)
		}
		got := e.stored(t, o.ID)
		if got.Status != order.StatusPending || got.Attempts != n+1 || got.NextAttemptAt != attemptAt.Add(ceiling-time.Microsecond) || !got.LeaseUntil.IsZero() {
			t.Fatalf("after attempt %d: %v, attempts %d, next %v, lease %v; want PENDING, %d, %v, unclaimed", n+1, got.Status, got.Attempts,
				got.NextAttemptAt.Sub(attemptAt), got.LeaseUntil, n+1, ceiling-time.Microsecond)
		}
		// Not due before its next attempt.
		e.clock.advance(ceiling - 2*time.Microsecond)
		if res, err := r.Pass(ctx); err != nil || res != (order.PassResult{}) {
			t.Fatalf("a pass before the next attempt = %+v, %v; want nothing attempted", res, err)
		}
		e.clock.advance(time.Microsecond)
	}
	if obs.attempts[order.OutcomeFailed] != 5 {
		t.Errorf("observed %v; want 5 failed attempts", obs.attempts)
	}
	// Back up: the next attempt settles it, and the status change starts the count over.
	e.payments.setDown(false)
	if res, err := r.Pass(ctx); err != nil || res.Settled != 1 {
		t.Fatalf("attempt after the outage = %+v, %v; want it settled", res, err)
	}
	if got := e.stored(t, o.ID); got.Status != order.StatusPaid || got.Attempts != 0 || !got.NextAttemptAt.IsZero() {
		t.Errorf("settled order = %v, attempts %d, next %v; want PAID, 0, zero", got.Status, got.Attempts, got.NextAttemptAt)
	}

	// The real jitter: every delay within [0, ceiling), and not all the same.
	p.Limit, p.PerUser = 50, 50
	r2, err := order.NewReconciler(e.svc, p, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.payments.setDown(true)
	var os []order.Order
	for i := range 20 {
		os = append(os, e.createPending(t, bob, tokApprove, fmt.Sprint("j", i)))
	}
	e.clock.advance(2 * grace)
	now := e.clock.now()
	if res, err := r2.Pass(ctx); err != nil || res.Failed != 20 {
		t.Fatalf("pass = %+v, %v; want 20 failures", res, err)
	}
	seen := map[time.Time]bool{}
	for _, o := range os {
		next := e.stored(t, o.ID).NextAttemptAt
		if next.Before(now) || !next.Before(now.Add(time.Second)) {
			t.Errorf("next attempt %v after the pass; want within [0, 1s)", next.Sub(now))
		}
		seen[next] = true
	}
	if len(seen) < 10 {
		t.Errorf("20 orders drew only %d distinct next attempts", len(seen))
	}
}

// A user with many unsettled orders gets no bigger share of a pass than anyone: every user's
// first order comes before anyone's second, and at most PerUser of one user's are taken.
func TestReconcileIsFairAcrossUsers(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	e.payments.setDown(true)
	var many []order.Order
	for i := range 10 {
		many = append(many, e.createPending(t, alice, tokApprove, fmt.Sprint("a", i)))
		e.clock.advance(time.Microsecond)
	}
	other := e.createPending(t, bob, tokApprove, "b") // the newest of all
	e.payments.setDown(false)
	e.clock.advance(2 * grace)

	p := policy(grace, 2)
	r, _ := e.reconciler(t, p)
	if res, err := r.Pass(ctx); err != nil || res.Settled != 2 {
		t.Fatalf("pass = %+v, %v; want 2 settled", res, err)
	}
	if got := e.stored(t, other.ID).Status; got != order.StatusPaid {
		t.Errorf("bob's order after alice's 10 older ones = %v; want PAID in the first pass of 2", got)
	}
	if got := e.stored(t, many[0].ID).Status; got != order.StatusPaid {
		t.Errorf("alice's oldest order = %v; want PAID", got)
	}

	p.Limit, p.PerUser = 50, 3
	r, _ = e.reconciler(t, p)
	if res, err := r.Pass(ctx); err != nil || res.Settled != 3 {
		t.Fatalf("pass with 3 per user = %+v, %v; want 3 of alice's 9 left", res, err)
	}
}

// Attempts run Workers at a time: an attempt that hangs does not hold up the next order.
func TestReconcileAttemptsConcurrently(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	os := e.pendingOrders(t, 2)
	e.clock.advance(2 * grace)
	release := make(chan struct{})
	var once sync.Once
	var calls sync.WaitGroup
	calls.Add(2)
	e.payments.onCharge = func() {
		calls.Done()
		once.Do(func() { <-release }) // the first charge hangs until the second has begun
	}
	p := policy(grace, 10)
	p.Workers = 2
	r, _ := e.reconciler(t, p)
	done := make(chan struct{})
	go func() {
		calls.Wait()
		close(release)
		close(done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := r.Pass(ctx)
	select {
	case <-done:
	default:
		t.Fatal("the second charge never began while the first hung")
	}
	if err != nil || res.Settled != 2 || e.stored(t, os[0].ID).Status != order.StatusPaid || e.stored(t, os[1].ID).Status != order.StatusPaid {
		t.Errorf("pass = %+v, %v; want both orders PAID", res, err)
	}
}

// An order whose charge keeps failing is given up after MaxAttempts: PAYMENT_FAILED with the
// reason, its payment token dropped, nothing refunded when nothing was captured. While the
// payment service cannot say what was charged it is not given up, only backed off.
func TestReconcileGivesUpAfterMaxAttempts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := policy(grace, 10)
	p.Backoff, p.MaxBackoff, p.MaxAttempts = time.Second, time.Second, 3
	r, obs := e.reconciler(t, p)

	stuck := e.createPending(t, alice, tokNoAnswer, "stuck") // the payment service knows a PENDING charge
	down := e.pendingOrders(t, 1)[0]
	e.clock.advance(2 * grace)
	pass := func(want order.PassResult) {
		t.Helper()
		if res, err := r.Pass(ctx); err != nil || res != want {
			t.Fatalf("pass = %+v, %v; want %+v", res, err, want)
		}
		e.clock.advance(time.Second)
	}
	e.payments.setDown(true)
	pass(order.PassResult{Failed: 2})
	pass(order.PassResult{Failed: 2})
	// The third failure is the last allowed, but the payment service cannot say what was
	// charged: both are backed off.
	pass(order.PassResult{Failed: 2})
	if got := e.stored(t, stuck.ID); got.Status != order.StatusPending || got.Attempts != 3 {
		t.Fatalf("with the payment service down: %v after %d attempts; want PENDING, 3", got.Status, got.Attempts)
	}
	e.payments.setDown(false)
	// Back: down's charge settles; stuck's charge still gets no answer, and it is given up.
	pass(order.PassResult{Settled: 1, GivenUp: 1})
	got := e.stored(t, stuck.ID)
	if got.Status != order.StatusPaymentFailed || !strings.Contains(got.FailureReason, "4 attempts") || got.PaymentToken != "" || got.PaymentID == "" {
		t.Errorf("given-up order = %+v; want PAYMENT_FAILED, the reason naming 4 attempts, its token dropped, its payment named", got)
	}
	if e.payments.refundCalls(got.PaymentID) != 0 {
		t.Errorf("nothing was captured, yet %d refunds", e.payments.refundCalls(got.PaymentID))
	}
	if e.stored(t, down.ID).Status != order.StatusPaid {
		t.Errorf("the other order = %v; want PAID", e.stored(t, down.ID).Status)
	}
	if obs.attempts[order.OutcomeGivenUp] != 1 || obs.attempts[order.OutcomeFailed] != 6 || obs.attempts[order.OutcomeSettled] != 1 {
		t.Errorf("observed %v; want 6 failed, 1 settled, 1 given up", obs.attempts)
	}
	// Given up, it is never attempted again.
	pass(order.PassResult{})
}

// MaxAge gives up an order that fails an attempt once it is that old, whatever its attempts;
// a payment found captured when the order is given up is refunded through the compensation, and
// the order ends CANCELLED with the reason.
func TestReconcileGivesUpOldOrdersAndRefundsWhatWasCaptured(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	p := policy(grace, 10)
	p.MaxAge = time.Hour
	r, _ := e.reconciler(t, p)
	o := e.pendingOrders(t, 1)[0]
	e.clock.advance(2 * grace)
	e.payments.chargesFail = true
	if res, err := r.Pass(ctx); err != nil || res.Failed != 1 {
		t.Fatalf("young order's pass = %+v, %v; want a failure", res, err)
	}
	// The charge went through after all, though no answer ever came back.
	e.payments.mu.Lock()
	captured := &order.Payment{ID: "pay-captured", Status: order.PaymentCaptured}
	e.payments.byKey[alice.Subject+"/order:"+o.ID], e.payments.byID[captured.ID] = captured, captured
	e.payments.mu.Unlock()
	e.clock.advance(time.Hour)
	if res, err := r.Pass(ctx); err != nil || res.GivenUp != 1 {
		t.Fatalf("old order's pass = %+v, %v; want it given up", res, err)
	}
	got := e.stored(t, o.ID)
	if got.Status != order.StatusCancelled || !strings.Contains(got.FailureReason, "given up") || got.PaymentID != "pay-captured" {
		t.Errorf("given-up captured order = %+v; want CANCELLED with the reason and its payment", got)
	}
	if n := e.payments.refundCalls("pay-captured"); n != 1 {
		t.Errorf("the captured payment was refunded %d times, want 1", n)
	}
}

// A CANCELLING order is never given up (money may be owed back): it is retried, backed off.
func TestReconcileNeverGivesUpACancellation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	o := e.create(t, alice, tokApprove, "paid")
	e.payments.setDown(true)
	if got, err := e.svc.Cancel(ctx, alice, o.ID, ""); err != nil || got.Status != order.StatusCancelling {
		t.Fatalf("Cancel while down = %+v, %v", got, err)
	}
	p := policy(grace, 10)
	p.Backoff, p.MaxBackoff, p.MaxAttempts, p.MaxAge = time.Second, time.Second, 1, time.Minute
	r, obs := e.reconciler(t, p)
	for range 3 {
		e.clock.advance(2 * grace)
		if res, err := r.Pass(ctx); err != nil || res.Failed != 1 {
			t.Fatalf("pass = %+v, %v; want a failure", res, err)
		}
	}
	if got := e.stored(t, o.ID); got.Status != order.StatusCancelling || got.Attempts != 3 {
		t.Fatalf("cancellation = %v after %d attempts; want CANCELLING, 3", got.Status, got.Attempts)
	}
	e.payments.setDown(false)
	e.clock.advance(2 * grace)
	if res, err := r.Pass(ctx); err != nil || res.Settled != 1 || e.stored(t, o.ID).Status != order.StatusCancelled {
		t.Fatalf("pass once back = %+v, %v; want it CANCELLED", res, err)
	}
	// Every pass counts the unsettled orders by age as it begins; now there are none.
	if _, err := r.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(obs.unsettled, make([]int64, len(order.UnsettledAges))) {
		t.Errorf("unsettled after the last pass = %v; want zeros", obs.unsettled)
	}
}

// Each pass counts the unsettled orders older than each of UnsettledAges.
func TestReconcileCountsUnsettledByAge(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pendingOrders(t, 1)
	e.clock.advance(10 * time.Minute)
	e.payments.setDown(true)
	e.createPending(t, bob, tokApprove, "b1")
	e.createPending(t, bob, tokApprove, "b2")
	e.clock.advance(2 * time.Minute)
	r, obs := e.reconciler(t, policy(time.Hour, 10))
	if _, err := r.Pass(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Ages 0, 1m, 5m, 15m, 1h: three orders, two of them 2 minutes old, one 12.
	if want := []int64{3, 3, 1, 0, 0}; !slices.Equal(obs.unsettled, want) {
		t.Errorf("unsettled = %v, want %v", obs.unsettled, want)
	}
}

func TestReconcilePolicyValidate(t *testing.T) {
	t.Parallel()
	ok := order.DefaultReconcilePolicy()
	if err := ok.Validate(); err != nil {
		t.Fatalf("the defaults: %v", err)
	}
	for name, change := range map[string]func(p *order.ReconcilePolicy){
		"negative grace":            func(p *order.ReconcilePolicy) { p.Grace = -1 },
		"no limit":                  func(p *order.ReconcilePolicy) { p.Limit = 0 },
		"no per-user share":         func(p *order.ReconcilePolicy) { p.PerUser = 0 },
		"no workers":                func(p *order.ReconcilePolicy) { p.Workers = 0 },
		"no backoff":                func(p *order.ReconcilePolicy) { p.Backoff = 0 },
		"max backoff below backoff": func(p *order.ReconcilePolicy) { p.MaxBackoff = p.Backoff / 2 },
		"no attempts":               func(p *order.ReconcilePolicy) { p.MaxAttempts = 0 },
		"no age":                    func(p *order.ReconcilePolicy) { p.MaxAge = 0 },
	} {
		p := ok
		change(&p)
		if err := p.Validate(); err == nil {
			t.Errorf("%s: Validate = nil, want an error", name)
		}
	}
}

// TestReconcilePassSurvivesAPanic: a panic while attempting one order (here in the payment
// client) is logged and ends that attempt alone; the pass settles the other order and returns,
// instead of taking the service down.
func TestReconcilePassSurvivesAPanic(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.pendingOrders(t, 2)
	e.clock.advance(2 * grace)
	var once sync.Once
	e.payments.onCharge = func() { once.Do(func() { panic("boom") }) }
	p := policy(grace, 10)
	p.Workers = 1
	r, _ := e.reconciler(t, p)
	res, err := r.Pass(context.Background())
	if err != nil || res.Settled != 1 {
		t.Fatalf("pass with one panicking attempt = %+v, %v; want the other order settled", res, err)
	}
}
