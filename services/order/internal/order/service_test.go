package order_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

// TestShippedOrdersCannotBeCancelled drives an order to SHIPPED and COMPLETED in the store (no
// RPC ships orders yet) and checks that cancelling them is refused before any payment call: the
// service is built without users or payments, and would fail if it reached them.
func TestShippedOrdersCannotBeCancelled(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := store.Open(ctx, testkit.SQLitePath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	svc := order.NewService(s, nil, nil, time.Minute)
	owner := auth.Identity{Subject: "00000000-0000-4000-8000-00000000a11c", Roles: []string{auth.RoleUser}}
	for i, st := range []order.Status{order.StatusShipped, order.StatusCompleted} {
		now := time.Now().UTC().Truncate(time.Microsecond)
		o := order.Order{
			ID: []string{"00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"}[i], UserID: owner.Subject,
			Items: []order.Item{{SKU: "A", Quantity: 1, UnitPriceMinor: 100}}, Currency: "USD", TotalMinor: 100,
			Status: order.StatusPaid, IdempotencyKey: fmt.Sprint("k", st), Fingerprint: "fp", Revision: 1, CreateTime: now, UpdateTime: now,
		}
		if err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		shipped := o
		shipped.Status, shipped.Revision = st, 2
		if err := s.Transition(ctx, shipped, order.StatusPaid); err != nil {
			t.Fatal(err)
		}
		if _, err := svc.Cancel(ctx, owner, o.ID, "too late"); !errors.Is(err, order.ErrNotCancellable) {
			t.Errorf("cancelling a %v order = %v, want ErrNotCancellable", st, err)
		}
		if _, err := svc.Cancel(ctx, auth.Identity{Subject: "someone-else"}, o.ID, ""); !errors.Is(err, order.ErrPermissionDenied) {
			t.Errorf("someone else cancelling = %v, want ErrPermissionDenied", err)
		}
	}
}
