package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

func TestStore(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) { suite(t, db.New(t)) })
}

func newOrder(n int, user string) order.Order {
	now := time.Date(2026, 1, 1, 0, 0, n, 0, time.UTC)
	return order.Order{
		ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", n), UserID: user, Items: []order.Item{{SKU: "A", Quantity: 1, UnitPriceMinor: 100}},
		Currency: "USD", TotalMinor: 100, Status: order.StatusPending, IdempotencyKey: fmt.Sprint("k", n), Fingerprint: "fp",
		PaymentToken: "tok_approve", Revision: 1, CreateTime: now, UpdateTime: now,
	}
}

func suite(t *testing.T, dsn string) {
	ctx := context.Background()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start, err := s.LastUpdateSeq(ctx)
	if err != nil || start != 0 {
		t.Fatalf("LastUpdateSeq of an empty log = %d, %v", start, err)
	}
	a := newOrder(1, "alice")
	if err := s.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	dup := newOrder(2, "alice")
	dup.IdempotencyKey = a.IdempotencyKey
	if err := s.Create(ctx, dup); !errors.Is(err, order.ErrDuplicateKey) {
		t.Fatalf("a reused key = %v, want ErrDuplicateKey", err)
	}
	got, err := s.GetByKey(ctx, "alice", a.IdempotencyKey)
	if err != nil || got.ID != a.ID || got.Items[0].SKU != "A" || !got.CreateTime.Equal(a.CreateTime) {
		t.Fatalf("GetByKey = %+v, %v", got, err)
	}

	// Eight replicas race for one claim: one wins.
	now := time.Now().UTC()
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for range 8 {
		wg.Go(func() {
			ok, err := s.Claim(ctx, a.ID, []order.Status{order.StatusPending}, now, now.Add(time.Minute))
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				won++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d of 8 concurrent claims won, want 1", won)
	}
	if due, err := s.Due(ctx, order.DueQuery{Statuses: []order.Status{order.StatusPending}, ChangedBefore: now, Now: now, PerUser: 10, Limit: 10}); err != nil || len(due) != 0 {
		t.Fatalf("a claimed order is due: %v, %v", due, err)
	}
	if err := s.Release(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if due, err := s.Due(ctx, order.DueQuery{Statuses: []order.Status{order.StatusPending}, ChangedBefore: now, Now: now, PerUser: 10, Limit: 10}); err != nil || len(due) != 1 {
		t.Fatalf("a released old pending order is not due: %v, %v", due, err)
	}

	// Transitions move the revision and log an update; a stale one changes nothing.
	paid := a
	paid.Status, paid.Revision, paid.PaymentID, paid.PaymentToken, paid.UpdateTime = order.StatusPaid, 2, "p1", "", now
	if err := s.Transition(ctx, paid, order.StatusPending); err != nil {
		t.Fatal(err)
	}
	if err := s.Transition(ctx, paid, order.StatusPending); !errors.Is(err, order.ErrAlreadyChanged) {
		t.Fatalf("a stale transition = %v, want ErrAlreadyChanged", err)
	}
	// On PostgreSQL an update appears once every transaction that began writing before it has
	// ended (sqldb.Published), those of the other tests sharing the server included.
	var updates []order.Update
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if updates, err = s.UpdatesAfter(ctx, []string{a.ID}, 0, 10); err != nil || len(updates) >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || len(updates) != 2 || updates[1].Order.Status != order.StatusPaid || updates[1].PreviousStatus != order.StatusPending ||
		updates[1].Order.PaymentToken != "" || updates[0].Seq >= updates[1].Seq {
		t.Fatalf("updates = %+v, %v", updates, err)
	}

	// Listing: newest first, by user and status.
	b := newOrder(3, "bob")
	if err := s.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	all, err := s.List(ctx, order.Filter{}, nil, 10)
	if err != nil || len(all) != 2 || all[0].ID != b.ID {
		t.Fatalf("List = %v, %v", all, err)
	}
	mine, err := s.List(ctx, order.Filter{UserID: "alice", Status: order.StatusPaid}, nil, 10)
	if err != nil || len(mine) != 1 || mine[0].ID != a.ID {
		t.Fatalf("List of alice's paid orders = %v, %v", mine, err)
	}
	page, err := s.List(ctx, order.Filter{}, &paging.Cursor{CreateTime: b.CreateTime, ID: b.ID}, 10)
	if err != nil || len(page) != 1 || page[0].ID != a.ID {
		t.Fatalf("List after a cursor = %v, %v", page, err)
	}
}

// TestPageTokens pages through orders across two replicas sharing one database, and reuses or
// edits a token, which is paging.ErrInvalidToken (InvalidArgument on page_token).
func TestPageTokens(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) {
		ctx := context.Background()
		dsn := db.New(t)
		var replicas []*order.Service
		for range 2 {
			s, err := store.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			replicas = append(replicas, order.NewService(s, nil, nil, time.Minute))
		}
		s, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for i := range 5 {
			if err := s.Create(ctx, newOrder(i+1, "alice")); err != nil {
				t.Fatal(err)
			}
		}
		alice := auth.Identity{Subject: "alice", Roles: []string{auth.RoleUser}}

		// Each page is asked of the other replica than the one that issued its token.
		n, token := 0, ""
		for i := 0; ; i++ {
			page, next, err := replicas[i%2].List(ctx, alice, order.Filter{}, 2, token)
			if err != nil {
				t.Fatalf("page %d: %v", i, err)
			}
			n += len(page)
			if token = next; token == "" {
				break
			}
		}
		if n != 5 {
			t.Errorf("listed %d orders, want 5", n)
		}

		_, next, err := replicas[0].List(ctx, alice, order.Filter{}, 2, "")
		if err != nil || next == "" {
			t.Fatalf("first page: %q, %v", next, err)
		}
		// The same position and filter, signed with the same key, but for ListPayments.
		otherMethod, err := paging.NewCodec(s.PageKey).Issue(ctx, "ListPayments", order.Filter{UserID: "alice"}, newOrder(3, "alice").Cursor())
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			name  string
			f     order.Filter
			token string
		}{
			{"other filter", order.Filter{Status: order.StatusPaid}, next},
			{"other method", order.Filter{}, otherMethod},
			{"edited", order.Filter{}, "x" + next},
		} {
			_, _, err := replicas[1].List(ctx, alice, tt.f, 2, tt.token)
			if f, ok := fault.As(err); !errors.Is(err, paging.ErrInvalidToken) || !ok || f.Code != fault.InvalidArgument || f.Field != "page_token" {
				t.Errorf("%s: %v, want paging.ErrInvalidToken", tt.name, err)
			}
		}
	})
}

// TestPaymentFeedPosition: the position in the payment event log survives a reopen (a restart
// resumes from it) and never moves back, whichever replica writes last.
func TestPaymentFeedPosition(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) {
		ctx := context.Background()
		dsn := db.New(t)
		s, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		if seq, err := s.PaymentFeedSeq(ctx); err != nil || seq != 0 {
			t.Fatalf("the position of a new store = %d, %v; want 0", seq, err)
		}
		for _, seq := range []int64{7, 42, 19} { // 19: a slower replica, behind
			if err := s.AdvancePaymentFeed(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
		again, err := store.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer again.Close()
		if seq, err := again.PaymentFeedSeq(ctx); err != nil || seq != 42 {
			t.Errorf("the position after a reopen = %d, %v; want 42", seq, err)
		}
	})
}
