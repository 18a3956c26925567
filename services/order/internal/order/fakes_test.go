package order_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

// Payment method tokens the fake payment service understands.
const (
	tokApprove     = "tok_approve"
	tokDecline     = "tok_decline"
	tokPendingOnce = "tok_pending_once" // the first charge's outcome is unknown, the next one captures
	tokNoAnswer    = "tok_no_answer"    // no charge's outcome is ever known: the payment stays pending
)

// fakeUsers is the user service: accounts are active unless listed as inactive.
type fakeUsers struct {
	mu       sync.Mutex
	inactive map[string]bool
	down     bool
	calls    int
}

func (u *fakeUsers) Active(_ context.Context, userID string) (bool, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.calls++
	if u.down {
		return false, fmt.Errorf("get user %s: %w: connection refused", userID, order.ErrUnavailable)
	}
	return !u.inactive[userID], nil
}

func (u *fakeUsers) setDown(down bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.down = down
}

// fakePayments is the payment service: one payment per payer and idempotency key, settled by the
// token, refunds counted per payment, every change in an event log. Like the real one called by
// the order service acting as itself (no user's token), it refuses a charge that names no payer.
// While down every call fails with order.ErrUnavailable and nothing is recorded, as when the
// service cannot be reached.
type fakePayments struct {
	mu       sync.Mutex
	down     bool
	byKey    map[string]*order.Payment // payer and charge idempotency key -> payment
	byID     map[string]*order.Payment
	events   []order.PaymentEvent
	charges  int            // Charge calls that reached the service
	refunds  map[string]int // payment id -> Refund calls
	onCharge func()         // called, unlocked, at the start of every Charge that reaches the service
	// chargesFail makes every Charge fail as if unreachable, while the other methods answer.
	chargesFail bool
}

func newFakePayments() *fakePayments {
	return &fakePayments{byKey: map[string]*order.Payment{}, byID: map[string]*order.Payment{}, refunds: map[string]int{}}
}

var (
	errRefused     = errors.New("rpc error: code = Unavailable desc = connection refused")
	errNoPayerName = errors.New("rpc error: code = InvalidArgument desc = user_id: required when the call carries no user's token")
)

func (p *fakePayments) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
}

// logEvent appends pay's state to the event log; p.mu is held.
func (p *fakePayments) logEvent(pay *order.Payment) {
	p.events = append(p.events, order.PaymentEvent{Seq: int64(len(p.events) + 1), Payment: *pay})
}

func (p *fakePayments) Charge(_ context.Context, req order.ChargeRequest) (order.Payment, error) {
	p.mu.Lock()
	hook := p.onCharge
	p.mu.Unlock()
	if hook != nil {
		hook()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down || p.chargesFail {
		return order.Payment{}, fmt.Errorf("charge: %w: %w", order.ErrUnavailable, errRefused)
	}
	if req.UserID == "" {
		return order.Payment{}, errNoPayerName
	}
	p.charges++
	key := req.UserID + "/" + req.IdempotencyKey
	if pay, ok := p.byKey[key]; ok {
		if pay.Status == order.PaymentPending && req.Token != tokNoAnswer {
			pay.Status = order.PaymentCaptured
			p.logEvent(pay)
		}
		return *pay, nil
	}
	pay := &order.Payment{ID: fmt.Sprintf("pay-%d", len(p.byKey)+1), OrderID: req.OrderID}
	switch req.Token {
	case tokApprove:
		pay.Status = order.PaymentCaptured
	case tokPendingOnce, tokNoAnswer:
		pay.Status = order.PaymentPending
	default:
		pay.Status, pay.Reason = order.PaymentDeclined, "card declined"
	}
	p.byKey[key], p.byID[pay.ID] = pay, pay
	p.logEvent(pay)
	return *pay, nil
}

func (p *fakePayments) Refund(_ context.Context, paymentID, _, _ string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return fmt.Errorf("refund: %w: %w", order.ErrUnavailable, errRefused)
	}
	p.refunds[paymentID]++
	if pay, ok := p.byID[paymentID]; ok && pay.Status != order.PaymentRefunded {
		pay.Status = order.PaymentRefunded
		p.logEvent(pay)
	}
	return nil
}

// refundElsewhere refunds a payment in full, or in part, as an admin's RefundPayment does: not
// through the order service.
func (p *fakePayments) refundElsewhere(paymentID string, full bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pay := p.byID[paymentID]
	pay.Status = order.PaymentPartiallyRefunded
	if full {
		pay.Status = order.PaymentRefunded
	}
	p.logEvent(pay)
}

func (p *fakePayments) Get(_ context.Context, paymentID string) (order.Payment, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return order.Payment{}, fmt.Errorf("get payment: %w: %w", order.ErrUnavailable, errRefused)
	}
	pay, ok := p.byID[paymentID]
	if !ok {
		return order.Payment{}, errors.New("rpc error: code = NotFound desc = payment not found")
	}
	return *pay, nil
}

func (p *fakePayments) ByKey(_ context.Context, userID, key string) (order.Payment, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return order.Payment{}, false, fmt.Errorf("payment by key: %w: %w", order.ErrUnavailable, errRefused)
	}
	pay, ok := p.byKey[userID+"/"+key]
	if !ok {
		return order.Payment{}, false, nil
	}
	return *pay, true, nil
}

func (p *fakePayments) EventsAfter(_ context.Context, seq int64, limit int) ([]order.PaymentEvent, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return nil, fmt.Errorf("payment events: %w: %w", order.ErrUnavailable, errRefused)
	}
	rest := p.events[min(int(seq), len(p.events)):]
	return slices.Clone(rest[:min(limit, len(rest))]), nil
}

func (p *fakePayments) chargeCalls() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.charges
}

func (p *fakePayments) refundCalls(paymentID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refunds[paymentID]
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
