package order_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

func TestCreatePaysForANewOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.create(t, alice, tokApprove, "k1")
	if o.Status != order.StatusPaid || o.TotalMinor != 2*1999+3*250 || o.PaymentID == "" || o.UserID != alice.Subject ||
		o.Revision != 2 || o.PaymentToken != "" {
		t.Fatalf("new order = %+v", o)
	}
	if got := e.stored(t, o.ID); got.Status != order.StatusPaid || got.PaymentToken != "" || !got.LeaseUntil.IsZero() {
		t.Errorf("stored order = %+v; want PAID, its token cleared and no claim", got)
	}
	// The update log records both states, which TrackOrders streams.
	updates, err := e.svc.UpdatesAfter(context.Background(), []string{o.ID}, 0, 100)
	if err != nil || len(updates) != 2 || updates[1].Order.Status != order.StatusPaid || updates[1].PreviousStatus != order.StatusPending {
		t.Errorf("updates = %+v, %v; want PENDING then PAID", updates, err)
	}
	if last, err := e.svc.LastUpdateSeq(context.Background()); err != nil || last != updates[len(updates)-1].Seq {
		t.Errorf("LastUpdateSeq = %d, %v", last, err)
	}
}

func TestCreateWithTheSameKeyReturnsTheSameOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	first := e.create(t, alice, tokApprove, "k1")
	again := e.create(t, alice, tokApprove, "k1")
	if again.ID != first.ID || again.Revision != first.Revision || e.payments.chargeCalls() != 1 {
		t.Fatalf("repeat = %+v after %+v with %d charges; want the same order and one charge", again, first, e.payments.chargeCalls())
	}
	// Keys are scoped to the user: bob's k1 is his own order.
	if bobs := e.create(t, bob, tokApprove, "k1"); bobs.ID == first.ID {
		t.Errorf("bob's k1 returned alice's order")
	}
}

func TestCreateRefusesAKeyReusedForOtherItems(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.create(t, alice, tokApprove, "k1")
	other := input(tokApprove, "k1")
	other.Items[0].Quantity = 5
	if _, err := e.svc.Create(context.Background(), alice, other); !errors.Is(err, order.ErrKeyReused) {
		t.Errorf("other items = %v, want ErrKeyReused", err)
	}
	otherToken := input(tokDecline, "k1")
	if _, err := e.svc.Create(context.Background(), alice, otherToken); !errors.Is(err, order.ErrKeyReused) {
		t.Errorf("another payment method = %v, want ErrKeyReused", err)
	}
}

func TestCreateRefusesInvalidItems(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name  string
		items []order.Item
		field string
	}{
		{"no items", nil, "items"},
		{"zero quantity", []order.Item{{SKU: "BOOK-1", Quantity: 1}, {SKU: "PEN-7", Quantity: 0}}, "items[1]"},
		{"overflow", []order.Item{{SKU: "GOLD", Quantity: 1 << 40}}, "items"},
	}
	for _, tt := range tests {
		in := input(tokApprove, tt.name)
		in.Items = tt.items
		if _, err := e.svc.Create(context.Background(), alice, in); invalidField(err) != tt.field {
			t.Errorf("%s: %v, want invalid %s", tt.name, err, tt.field)
		}
	}
	if e.users.calls != 0 || e.payments.chargeCalls() != 0 {
		t.Errorf("invalid orders reached the users (%d) or payments (%d)", e.users.calls, e.payments.chargeCalls())
	}
}

func TestCreateWritesNothingWhenTheUserMayNotOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.users.inactive[alice.Subject] = true
	if _, err := e.svc.Create(context.Background(), alice, input(tokApprove, "k1")); !errors.Is(err, order.ErrUserInactive) {
		t.Errorf("inactive user = %v, want ErrUserInactive", err)
	}
	e.users.setDown(true)
	if _, err := e.svc.Create(context.Background(), bob, input(tokApprove, "k1")); !errors.Is(err, order.ErrUnavailable) {
		t.Errorf("user service down = %v, want ErrUnavailable", err)
	}
	for _, who := range []string{alice.Subject, bob.Subject} {
		if _, err := e.store.GetByKey(context.Background(), who, "k1"); !errors.Is(err, order.ErrNotFound) {
			t.Errorf("an order was written for %s: %v", who, err)
		}
	}
	if e.payments.chargeCalls() != 0 {
		t.Errorf("%d charges, want none", e.payments.chargeCalls())
	}
}

func TestCreateRecordsADecline(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	o := e.create(t, alice, tokDecline, "k1")
	if o.Status != order.StatusPaymentFailed || o.FailureReason != "card declined" || o.PaymentID == "" || o.PaymentToken != "" {
		t.Fatalf("declined order = %+v; want PAYMENT_FAILED with the reason", o)
	}
}

// An unknown outcome (the payment service answers PENDING, or cannot be reached) keeps the order
// PENDING; the claim is released at once, so repeating the request settles it.
func TestCreateKeepsTheOrderPendingWhenThePaymentIsUnsettled(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name  string
		token string
		down  bool
	}{{"payment pending", tokPendingOnce, false}, {"payment service down", tokApprove, true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.payments.setDown(tt.down)
			o := e.createPending(t, alice, tt.token, "k1")
			if got := e.stored(t, o.ID); got.Status != order.StatusPending || got.PaymentToken != tt.token || !got.LeaseUntil.IsZero() {
				t.Fatalf("stored = %+v; want PENDING with its token kept for the reconciler and the claim released", got)
			}
			e.payments.setDown(false)
			paid := e.create(t, alice, tt.token, "k1") // the same moment: no lease to wait for
			if paid.ID != o.ID || paid.Status != order.StatusPaid {
				t.Fatalf("retry = %+v; want order %s PAID", paid, o.ID)
			}
		})
	}
}

func TestCreateWhileAnotherCallHoldsTheClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.payments.setDown(true)
	o := e.createPending(t, alice, tokApprove, "k1")
	e.payments.setDown(false)
	e.claimElsewhere(t, o.ID, order.StatusPending)

	_, err := e.svc.Create(context.Background(), alice, input(tokApprove, "k1"))
	if !isPending(err) || !errors.Is(err, order.ErrBusy) {
		t.Fatalf("Create while claimed = %v; want the pending error, busy", err)
	}
	if e.payments.chargeCalls() != 0 {
		t.Fatalf("a claimed order was charged")
	}
	// Just before the lease ends it is still held; once it has ended the order can be taken again.
	e.clock.advance(lease - time.Microsecond)
	if _, err := e.svc.Create(context.Background(), alice, input(tokApprove, "k1")); !errors.Is(err, order.ErrBusy) {
		t.Fatalf("Create before the lease ends = %v; want busy", err)
	}
	e.clock.advance(time.Microsecond)
	if paid := e.create(t, alice, tokApprove, "k1"); paid.Status != order.StatusPaid || e.payments.chargeCalls() != 1 {
		t.Fatalf("Create after the lease = %+v with %d charges; want PAID, charged once", paid, e.payments.chargeCalls())
	}
}

func TestConcurrentCreatesWithOneKeyMakeOneOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 8
	var wg sync.WaitGroup
	ids := make(chan string, n)
	for i := range n {
		wg.Go(func() {
			o, err := e.svc.Create(context.Background(), alice, input(tokApprove, "k1"))
			switch {
			case err == nil && o.Status == order.StatusPaid, isPending(err) && errors.Is(err, order.ErrBusy):
				ids <- o.ID
			default:
				t.Errorf("create %d = %+v, %v; want PAID, or busy while another call pays", i, o, err)
			}
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	all, err := listAll(t, e.svc, alice, order.Filter{}, 10)
	if len(seen) != 1 || err != nil || len(all) != 1 || all[0].Status != order.StatusPaid || e.payments.chargeCalls() != 1 {
		t.Fatalf("%d creates answered %d order ids; stored %d orders (%v); %d charges; want one PAID order charged once",
			n, len(seen), len(all), err, e.payments.chargeCalls())
	}
}

func TestGetAndList(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	var mine []order.Order
	for _, key := range []string{"a", "b", "c"} {
		mine = append(mine, e.create(t, alice, tokApprove, key))
		e.clock.advance(time.Microsecond) // distinct create times, so newest first is well defined
	}
	bobs := e.create(t, bob, tokDecline, "a")

	if got, err := e.svc.Get(ctx, alice, mine[0].ID); err != nil || got.ID != mine[0].ID {
		t.Errorf("Get own = %+v, %v", got, err)
	}
	if _, err := e.svc.Get(ctx, alice, bobs.ID); !errors.Is(err, order.ErrPermissionDenied) {
		t.Errorf("Get bob's = %v, want ErrPermissionDenied", err)
	}
	if got, err := e.svc.Get(ctx, admin, bobs.ID); err != nil || got.ID != bobs.ID {
		t.Errorf("admin Get = %+v, %v", got, err)
	}
	if _, err := e.svc.Get(ctx, alice, "00000000-0000-4000-8000-999999999999"); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("Get missing = %v, want ErrNotFound", err)
	}

	all, err := listAll(t, e.svc, alice, order.Filter{}, 2)
	if err != nil || len(all) != 3 || all[0].ID != mine[2].ID || all[2].ID != mine[0].ID {
		t.Errorf("alice's orders = %d (%v); want her 3, newest first", len(all), err)
	}
	if _, err := listAll(t, e.svc, alice, order.Filter{UserID: bob.Subject}, 2); !errors.Is(err, order.ErrPermissionDenied) {
		t.Errorf("alice listing bob's = %v, want ErrPermissionDenied", err)
	}
	everyone, err := listAll(t, e.svc, admin, order.Filter{}, 2)
	if err != nil || len(everyone) != 4 {
		t.Errorf("admin listed %d (%v), want 4", len(everyone), err)
	}
	failed, err := listAll(t, e.svc, admin, order.Filter{Status: order.StatusPaymentFailed}, 2)
	if err != nil || len(failed) != 1 || failed[0].ID != bobs.ID {
		t.Errorf("PAYMENT_FAILED orders = %d (%v), want bob's one", len(failed), err)
	}
}

// TestCreateTakesAnActiveTokensWord: a token stating that its account was active when it was
// issued places the order without asking the user service, even for an account it would call
// inactive now: that is the window, at most the token's lifetime, which the README states. A
// token stating a suspended account, or no status, is checked with the user service: refused
// while the account is inactive, placed once it is active again.
func TestCreateTakesAnActiveTokensWord(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.users.inactive[alice.Subject] = true
	stating := func(id auth.Identity, status string) auth.Identity { id.AccountStatus = status; return id }

	if _, err := e.svc.Create(context.Background(), stating(alice, auth.AccountActive), input(tokApprove, "k1")); err != nil || e.users.calls != 0 {
		t.Fatalf("a token stating an active account = %v after %d calls to the user service, want the order placed and none", err, e.users.calls)
	}
	for i, id := range []auth.Identity{stating(alice, auth.AccountSuspended), alice} {
		calls := e.users.calls
		if _, err := e.svc.Create(context.Background(), id, input(tokApprove, fmt.Sprint("k", i+2))); !errors.Is(err, order.ErrUserInactive) || e.users.calls != calls+1 {
			t.Errorf("a token stating %q of an inactive account = %v after %d calls, want ErrUserInactive after one", id.AccountStatus, err, e.users.calls-calls)
		}
	}
	e.users.inactive[alice.Subject] = false // reactivated: a token issued while suspended still orders
	if _, err := e.svc.Create(context.Background(), stating(alice, auth.AccountSuspended), input(tokApprove, "k4")); err != nil {
		t.Errorf("a token stating a suspended account, reactivated since = %v, want the order placed", err)
	}
}
