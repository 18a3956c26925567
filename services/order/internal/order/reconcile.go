package order

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// ReconcilePolicy bounds the reconciler: how much one pass takes, how a failed order is backed
// off, and when a pending order is given up. DefaultReconcilePolicy holds the defaults.
type ReconcilePolicy struct {
	// Grace is how long an order may stay unsettled before the reconciler takes it, so that it
	// does not race the call that is settling it. Default 5 s.
	Grace time.Duration
	// Limit is the most orders one pass takes (default 50), PerUser the most of one user's
	// (default 5): a user with many failing orders gets no bigger share of a pass than anyone.
	Limit, PerUser int
	// Workers is how many orders a pass attempts at once (default 4), so that one slow attempt
	// does not hold the others up.
	Workers int
	// Backoff is the largest delay before the first retry of a failed order (default 5 s); each
	// further failure doubles it, up to MaxBackoff (default 10 min). The delay is drawn uniformly
	// below it ("full jitter"), so that orders that failed together do not retry together.
	Backoff, MaxBackoff time.Duration
	// MaxAttempts (default 10) and MaxAge (default 24 h) bound a PENDING order: once it has
	// failed that many attempts, or is that old, the reconciler gives it up (see Reconciler). A
	// CANCELLING order is never given up: money may be owed back; it keeps being retried at
	// MaxBackoff at most, and the stuck-orders alert reports it.
	MaxAttempts int
	MaxAge      time.Duration
}

// DefaultReconcilePolicy returns the production defaults documented on ReconcilePolicy.
func DefaultReconcilePolicy() ReconcilePolicy {
	return ReconcilePolicy{Grace: 5 * time.Second, Limit: 50, PerUser: 5, Workers: 4, Backoff: 5 * time.Second,
		MaxBackoff: 10 * time.Minute, MaxAttempts: 10, MaxAge: 24 * time.Hour}
}

// Validate reports a policy the reconciler cannot run with.
func (p ReconcilePolicy) Validate() error {
	switch {
	case p.Grace < 0:
		return errors.New("reconcile grace must not be negative")
	case p.Limit < 1 || p.PerUser < 1 || p.Workers < 1:
		return errors.New("reconcile limit, per-user limit and workers must be at least 1")
	case p.Backoff <= 0 || p.MaxBackoff < p.Backoff:
		return errors.New("reconcile backoff must be positive and at most the maximum backoff")
	case p.MaxAttempts < 1 || p.MaxAge <= 0:
		return errors.New("reconcile max attempts must be at least 1 and max age positive")
	}
	return nil
}

// DueQuery selects the orders a reconcile pass takes: in one of Statuses, held by nobody at Now,
// last changed before ChangedBefore, and due (next attempt at or before Now); at most PerUser of
// one user and Limit in all, round-robin across users: every user's first order (the one whose
// next attempt is earliest, then the oldest) before anyone's second.
type DueQuery struct {
	Statuses       []Status
	ChangedBefore  time.Time
	Now            time.Time
	PerUser, Limit int
}

// Outcome is what one attempt at an order came to.
type Outcome string

// Outcomes.
const (
	// OutcomeSettled: the order left PENDING or CANCELLING (paid, declined or cancelled).
	OutcomeSettled Outcome = "settled"
	// OutcomeFailed: the order is where it was; it is retried after a backoff.
	OutcomeFailed Outcome = "failed"
	// OutcomeGivenUp: the order failed its last allowed attempt and was given up (dead-lettered).
	OutcomeGivenUp Outcome = "given_up"
)

// UnsettledAges are the ages the reconciler counts unsettled orders above (Observer.Unsettled).
var UnsettledAges = []time.Duration{0, time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour}

// Observer is told what the reconciler does, for metrics.
type Observer interface {
	// Attempted is called once per attempt at an order.
	Attempted(Outcome)
	// Unsettled is called once per pass with, for each of UnsettledAges, how many orders are
	// PENDING or CANCELLING and older than it.
	Unsettled(counts []int64)
}

// Reconciler settles the orders a failure left PENDING or CANCELLING: it repeats the charge with
// the same key, or finishes the cancellation. Any number of replicas may run one on the same
// store: each order is claimed before it is touched. A failed attempt is logged at WARN and the
// order backed off; a PENDING order that fails ReconcilePolicy.MaxAttempts attempts, or reaches
// MaxAge, is given up: it ends PAYMENT_FAILED with the reason, or, if its payment turns out
// captured, is cancelled through the usual compensation, which refunds it.
type Reconciler struct {
	svc      *Service
	policy   ReconcilePolicy
	log      *slog.Logger
	observer Observer
	// jitter returns a duration drawn uniformly from [0, n).
	jitter func(n time.Duration) time.Duration
}

// NewReconciler returns a reconciler of svc's orders with policy p, logging to log and telling
// observer (nil: nobody) what it does.
func NewReconciler(svc *Service, p ReconcilePolicy, log *slog.Logger, observer Observer) (*Reconciler, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if observer == nil {
		observer = nopObserver{}
	}
	return &Reconciler{svc: svc, policy: p, log: log, observer: observer,
		jitter: func(n time.Duration) time.Duration { return time.Duration(rand.Int64N(int64(n))) }}, nil
}

type nopObserver struct{}

func (nopObserver) Attempted(Outcome) {}
func (nopObserver) Unsettled([]int64) {}

// Run makes a pass every interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res, err := r.Pass(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("reconcile pass failed", "error", err)
		}
		if res.Settled > 0 || res.GivenUp > 0 {
			r.log.Info("reconciled orders", "settled", res.Settled, "failed", res.Failed, "given_up", res.GivenUp)
		}
	}
}

// PassResult counts what one pass did.
type PassResult struct {
	Settled, Failed, GivenUp int
}

// Pass attempts, once, the orders that are due (see DueQuery), Workers at a time, and reports
// what came of them. It stops taking orders when ctx ends; the attempts under way finish.
func (r *Reconciler) Pass(ctx context.Context) (PassResult, error) {
	now := r.svc.now()
	statuses := []Status{StatusPending, StatusCancelling}
	r.countUnsettled(ctx, statuses, now)
	due, err := r.svc.store.Due(ctx, DueQuery{Statuses: statuses, ChangedBefore: now.Add(-r.policy.Grace), Now: now,
		PerUser: r.policy.PerUser, Limit: r.policy.Limit})
	if err != nil {
		return PassResult{}, err
	}
	var (
		res PassResult
		mu  sync.Mutex
		g   errgroup.Group
	)
	g.SetLimit(r.policy.Workers) // Go waits for a free worker
	for _, o := range due {
		if ctx.Err() != nil {
			break // no more orders; the attempts under way finish
		}
		g.Go(func() error {
			// A panic in one attempt is logged and ends that attempt alone: the order stays
			// claimed until its lease ends and is tried again then, and the service lives on.
			defer func() {
				if p := recover(); p != nil {
					r.log.Error("panic while reconciling an order", "order_id", o.ID, "panic", p, "stack", string(debug.Stack()))
				}
			}()
			out, ok := r.attempt(ctx, o)
			if !ok {
				return nil
			}
			r.observer.Attempted(out)
			mu.Lock()
			defer mu.Unlock()
			switch out {
			case OutcomeSettled:
				res.Settled++
			case OutcomeFailed:
				res.Failed++
			case OutcomeGivenUp:
				res.GivenUp++
			}
			return nil
		})
	}
	_ = g.Wait() // attempts report through res, never an error
	return res, ctx.Err()
}

func (r *Reconciler) countUnsettled(ctx context.Context, statuses []Status, now time.Time) {
	before := make([]time.Time, len(UnsettledAges))
	for i, age := range UnsettledAges {
		before[i] = now.Add(-age)
	}
	counts, err := r.svc.store.CountUnsettled(ctx, statuses, before)
	if err != nil {
		if ctx.Err() == nil {
			r.log.Warn("count unsettled orders", "error", err)
		}
		return
	}
	r.observer.Unsettled(counts)
}

// attempt tries to settle o once; ok is false when another call held it, which is no attempt.
func (r *Reconciler) attempt(ctx context.Context, o Order) (_ Outcome, ok bool) {
	var cause error
	switch o.Status {
	case StatusPending:
		held, err := r.svc.claim(ctx, o.ID, StatusPending)
		if err != nil && ctx.Err() == nil {
			r.log.Warn("claim order", "order_id", o.ID, "error", err)
		}
		if err != nil || !held {
			return "", false // another call holds it, or the store failed: no attempt was made
		}
		after, err := r.svc.charge(ctx, o)
		if err == nil && after.Status != StatusPending {
			return OutcomeSettled, true
		}
		cause = err
	case StatusCancelling:
		after, err := r.svc.compensate(ctx, o, "cancelled")
		if err == nil && after.Status != StatusCancelling {
			return OutcomeSettled, true
		}
		cause = errors.Join(err, errors.New("the payment service could not settle and refund the order's payment now"))
	default:
		return "", false
	}

	n := o.Attempts + 1
	age := r.svc.now().Sub(o.CreateTime)
	if o.Status == StatusPending && (n >= r.policy.MaxAttempts || age >= r.policy.MaxAge) {
		reason := fmt.Sprintf("the payment could not be settled in %d attempts over %v; the order was given up", n, age.Round(time.Second))
		after, err := r.giveUp(ctx, o, reason)
		if err == nil {
			r.log.Warn("order given up", "order_id", o.ID, "user_id", o.UserID, "attempt", n, "status", after.Status,
				"payment_id", after.PaymentID, "error", cause)
			return OutcomeGivenUp, true
		}
		// The payment service could not tell what was charged: try again later, as any failure.
		cause = errors.Join(cause, fmt.Errorf("give the order up: %w", err))
	}
	next := r.svc.now().Add(r.backoff(n))
	dctx, cancel := detached(ctx)
	defer cancel()
	if _, err := r.svc.store.Reschedule(dctx, o.ID, o.Status, n, next); err != nil {
		cause = errors.Join(cause, err)
	}
	r.log.Warn("order not settled", "order_id", o.ID, "user_id", o.UserID, "status", o.Status, "attempt", n,
		"next_attempt_at", next, "error", cause)
	return OutcomeFailed, true
}

// backoff returns the delay before attempt n+1 after n failed ones: drawn uniformly below
// Backoff·2^(n-1), capped at MaxBackoff. Written here rather than taken from a backoff library:
// the schedule lives in the database (attempts, next_attempt_at), shared by every replica and
// surviving restarts, which the in-process retry loops of those libraries do not model, and what
// is left is this formula.
func (r *Reconciler) backoff(n int) time.Duration {
	ceiling := r.policy.MaxBackoff
	if n-1 < 62 {
		if d := r.policy.Backoff << (n - 1); d > 0 && d < ceiling {
			ceiling = d
		}
	}
	return r.jitter(ceiling)
}

// giveUp ends pending order o, whose charges keep failing: PAYMENT_FAILED with reason when
// nothing was captured (no payment, a declined one, or one whose outcome is still unknown, which
// nobody will ask for again: the order's payment token is dropped); when its payment is captured
// after all, the order is cancelled with reason through the usual compensation, which refunds it.
func (r *Reconciler) giveUp(ctx context.Context, o Order, reason string) (Order, error) {
	held, err := r.svc.claim(ctx, o.ID, StatusPending)
	if err != nil {
		return Order{}, err
	}
	if !held {
		return Order{}, ErrBusy
	}
	p, found, err := r.svc.ownPayment(ctx, o)
	if err != nil {
		r.svc.release(ctx, o.ID)
		return Order{}, err
	}
	next := o
	next.FailureReason, next.PaymentToken = reason, ""
	if found {
		next.PaymentID = p.ID
	}
	if found && (p.Status == PaymentCaptured || p.Status == PaymentRefunded) {
		next.Status, next.PaymentToken = StatusCancelling, o.PaymentToken
		cancelling, err := r.svc.transition(ctx, o, next)
		if err != nil {
			return Order{}, err
		}
		return r.svc.compensate(ctx, cancelling, reason)
	}
	next.Status = StatusPaymentFailed
	return r.svc.transition(ctx, o, next)
}
