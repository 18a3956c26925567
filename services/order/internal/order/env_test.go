package order_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

const lease = time.Minute

var (
	alice = auth.Identity{Subject: "00000000-0000-4000-8000-00000000a11c", Roles: []string{auth.RoleUser}}
	bob   = auth.Identity{Subject: "00000000-0000-4000-8000-000000000b0b", Roles: []string{auth.RoleUser}}
	admin = auth.Identity{Subject: "00000000-0000-4000-8000-0000000ad111", Roles: []string{auth.RoleAdmin}}
)

// env is an order service on a fresh SQLite store, with fake users and payments and a clock
// that moves only when told.
type env struct {
	svc      *order.Service
	store    *store.Orders
	users    *fakeUsers
	payments *fakePayments
	clock    *clock
	catalog  *order.Catalog
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s := testkit.OpenSQLite(t, store.Open)
	e := &env{store: s, users: &fakeUsers{inactive: map[string]bool{}}, payments: newFakePayments(),
		clock: &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	e.svc = order.NewService(s, e.users, e.payments, lease)
	order.SetClock(e.svc, e.clock.now)
	e.catalog = order.NewCatalog(s, s.PageKey)
	if _, err := e.catalog.Seed(context.Background(), testCatalog()); err != nil {
		t.Fatal(err)
	}
	return e
}

// testCatalog is the catalog every env starts with.
func testCatalog() []order.Product {
	return []order.Product{
		{SKU: "BOOK-1", Name: "Book", Currency: "USD", PriceMinor: 1999, Active: true},
		{SKU: "PEN-7", Name: "Pen", Currency: "USD", PriceMinor: 250, Active: true},
		{SKU: "GOLD", Name: "Gold bar", Currency: "USD", PriceMinor: order.MaxPriceMinor, Active: true},
		{SKU: "BOOK-1-EU", Name: "Book", Currency: "EUR", PriceMinor: 1899, Active: true},
		{SKU: "OLD-LAMP", Name: "Lamp", Currency: "USD", PriceMinor: 3500, Active: false},
	}
}

func input(token, key string) order.CreateInput {
	return order.CreateInput{
		Items: []order.Item{{SKU: "BOOK-1", Quantity: 2}, {SKU: "PEN-7", Quantity: 3}},
		Token: token, IdempotencyKey: key,
	}
}

// create places an order that must succeed without error.
func (e *env) create(t *testing.T, who auth.Identity, token, key string) order.Order {
	t.Helper()
	o, err := e.svc.Create(context.Background(), who, input(token, key))
	if err != nil {
		t.Fatalf("Create(%s, %s) = %v", token, key, err)
	}
	return o
}

// createPending places an order whose payment cannot be settled now: it must come back PENDING
// with the pending error.
func (e *env) createPending(t *testing.T, who auth.Identity, token, key string) order.Order {
	t.Helper()
	o, err := e.svc.Create(context.Background(), who, input(token, key))
	if !isPending(err) || o.ID == "" || o.Status != order.StatusPending {
		t.Fatalf("Create(%s, %s) = %+v, %v; want a PENDING order and the pending error", token, key, o, err)
	}
	return o
}

// stored reads an order back from the store.
func (e *env) stored(t *testing.T, id string) order.Order {
	t.Helper()
	o, err := e.store.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// claimElsewhere takes the claim on an order as another replica would, until the lease ends.
func (e *env) claimElsewhere(t *testing.T, id string, statuses ...order.Status) {
	t.Helper()
	now := e.clock.now()
	if ok, err := e.store.Claim(context.Background(), id, statuses, now, now.Add(lease)); err != nil || !ok {
		t.Fatalf("claim %s = %v, %v", id, ok, err)
	}
}

// isPending reports whether err says the order was kept PENDING with its payment unsettled.
func isPending(err error) bool {
	return errors.Is(err, order.ErrPaymentPending)
}

// invalidField returns the request field an invalid-input error names, "" for other errors.
func invalidField(err error) string {
	if f, ok := fault.As(err); ok && f.Code == fault.InvalidArgument {
		return f.Field
	}
	return ""
}

// listAll pages through every order f selects for who, pageSize at a time.
func listAll(t *testing.T, svc *order.Service, who auth.Identity, f order.Filter, pageSize int) ([]order.Order, error) {
	t.Helper()
	var all []order.Order
	var token string
	for pages := 0; ; pages++ {
		page, next, err := svc.List(context.Background(), who, f, pageSize, token)
		if err != nil {
			return nil, err
		}
		if len(page) > pageSize {
			t.Fatalf("a page of %d orders, want at most %d", len(page), pageSize)
		}
		all = append(all, page...)
		if next == "" || pages > 100 {
			return all, nil
		}
		token = next
	}
}
