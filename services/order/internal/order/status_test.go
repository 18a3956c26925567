package order_test

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

// statusLog records the statuses an observer is told of.
type statusLog struct {
	mu   sync.Mutex
	seen []order.Status
}

func (l *statusLog) Entered(st order.Status) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = append(l.seen, st)
}

func (l *statusLog) take() []order.Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.seen
	l.seen = nil
	return out
}

// TestEnteredStatusesAreObserved: every status an order enters is told once, in order; a retried
// create and a cancellation of a cancelled order enter nothing.
func TestEnteredStatusesAreObserved(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	log := &statusLog{}
	e.svc.ObserveStatuses(log)

	o := e.create(t, alice, tokApprove, "k")
	if got, want := log.take(), []order.Status{order.StatusPending, order.StatusPaid}; !slices.Equal(got, want) {
		t.Errorf("a paid order entered %v, want %v", got, want)
	}
	e.create(t, alice, tokApprove, "k")
	if got := log.take(); len(got) != 0 {
		t.Errorf("a retried create entered %v, want nothing", got)
	}
	if _, err := e.svc.Cancel(ctx, alice, o.ID, "changed my mind"); err != nil {
		t.Fatal(err)
	}
	if got, want := log.take(), []order.Status{order.StatusCancelling, order.StatusCancelled}; !slices.Equal(got, want) {
		t.Errorf("a cancellation entered %v, want %v", got, want)
	}
	if _, err := e.svc.Cancel(ctx, alice, o.ID, "again"); err != nil {
		t.Fatal(err)
	}
	if got := log.take(); len(got) != 0 {
		t.Errorf("cancelling a cancelled order entered %v, want nothing", got)
	}
	e.create(t, alice, tokDecline, "k2")
	if got, want := log.take(), []order.Status{order.StatusPending, order.StatusPaymentFailed}; !slices.Equal(got, want) {
		t.Errorf("a declined order entered %v, want %v", got, want)
	}
}
