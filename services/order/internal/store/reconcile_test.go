package store_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

// The reconciler's queries on both databases: Due is fair across users and honours the next
// attempt; Reschedule counts an attempt once and only in the status it was made in; a transition
// starts the count over; CountUnsettled counts by age in one statement.
func TestReconcileQueries(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) {
		ctx := context.Background()
		s, err := store.Open(ctx, db.New(t))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		// Alice has orders 1-6 (the oldest), bob 7-8, carol 9.
		var all []order.Order
		for n := 1; n <= 9; n++ {
			user := "alice"
			switch {
			case n >= 9:
				user = "carol"
			case n >= 7:
				user = "bob"
			}
			o := newOrder(n, user)
			if err := s.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
			all = append(all, o)
		}
		now := time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)
		due := func(perUser, limit int) []string {
			t.Helper()
			got, err := s.Due(ctx, order.DueQuery{Statuses: []order.Status{order.StatusPending}, ChangedBefore: now, Now: now, PerUser: perUser, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, o := range got {
				ids = append(ids, o.ID[len(o.ID)-1:])
			}
			return ids
		}
		// Round-robin: every user's first before anyone's second, oldest first within a round.
		if got, want := due(2, 10), []string{"1", "7", "9", "2", "8"}; !slices.Equal(got, want) {
			t.Fatalf("Due(2 per user) = %v, want %v", got, want)
		}
		if got, want := due(10, 4), []string{"1", "7", "9", "2"}; !slices.Equal(got, want) {
			t.Fatalf("Due(limit 4) = %v, want %v", got, want)
		}

		// Alice's oldest failed: backed off past now it is not due, and her next comes first.
		if ok, err := s.Reschedule(ctx, all[0].ID, order.StatusPending, 1, now.Add(time.Minute)); err != nil || !ok {
			t.Fatalf("Reschedule = %v, %v", ok, err)
		}
		if ok, err := s.Reschedule(ctx, all[0].ID, order.StatusPending, 1, now.Add(time.Hour)); err != nil || ok {
			t.Fatalf("the same attempt counted twice: %v, %v", ok, err)
		}
		if ok, err := s.Reschedule(ctx, all[0].ID, order.StatusCancelling, 2, now.Add(time.Hour)); err != nil || ok {
			t.Fatalf("an attempt counted in another status: %v, %v", ok, err)
		}
		got, err := s.Get(ctx, all[0].ID)
		if err != nil || got.Attempts != 1 || !got.NextAttemptAt.Equal(now.Add(time.Minute)) {
			t.Fatalf("rescheduled order: attempts %d, next %v, %v", got.Attempts, got.NextAttemptAt, err)
		}
		if got, want := due(1, 10), []string{"2", "7", "9"}; !slices.Equal(got, want) {
			t.Fatalf("Due with alice's oldest backed off = %v, want %v", got, want)
		}
		// Once it is due again it comes after her never-attempted orders.
		later := now.Add(time.Minute)
		got2, err := s.Due(ctx, order.DueQuery{Statuses: []order.Status{order.StatusPending}, ChangedBefore: later, Now: later, PerUser: 10, Limit: 10})
		if err != nil || len(got2) != 9 || got2[len(got2)-1].ID != all[0].ID {
			t.Fatalf("Due once it is due again: %d orders, %v; want it last", len(got2), err)
		}

		// A transition starts the count over.
		paid := got
		paid.Status, paid.Revision, paid.UpdateTime = order.StatusPaid, got.Revision+1, now
		if err := s.Transition(ctx, paid, order.StatusPending); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, all[0].ID); err != nil || got.Attempts != 0 || !got.NextAttemptAt.IsZero() {
			t.Fatalf("after a transition: attempts %d, next %v, %v; want 0, zero", got.Attempts, got.NextAttemptAt, err)
		}

		// Orders 2-9 are pending, created at 00:00:02 to 00:00:09.
		base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		counts, err := s.CountUnsettled(ctx, []order.Status{order.StatusPending, order.StatusCancelling},
			[]time.Time{now, base.Add(5 * time.Second), base.Add(2 * time.Second)})
		if want := []int64{8, 3, 0}; err != nil || !slices.Equal(counts, want) {
			t.Fatalf("CountUnsettled = %v, %v; want %v", counts, err, want)
		}
	})
}
