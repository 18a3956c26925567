package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

func TestCatalogStore(t *testing.T) {
	t.Parallel()
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) { catalogSuite(t, db.New(t)) })
}

func catalogSuite(t *testing.T, dsn string) {
	ctx := context.Background()
	s, err := store.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	product := func(sku string, price int64, active bool) order.Product {
		return order.Product{SKU: sku, Name: "name of " + sku, Currency: "USD", PriceMinor: price, Active: active, Version: 1, CreateTime: now, UpdateTime: now}
	}
	n, err := s.SeedProducts(ctx, []order.Product{product("B", 200, true), product("A", 100, true), product("C", 300, false)})
	if err != nil || n != 3 {
		t.Fatalf("SeedProducts = %d, %v; want 3", n, err)
	}
	if err := s.CreateProduct(ctx, product("A", 1, true)); !errors.Is(err, order.ErrProductExists) {
		t.Errorf("CreateProduct of a taken SKU = %v, want ErrProductExists", err)
	}
	if err := s.CreateProduct(ctx, product("D", 400, true)); err != nil {
		t.Fatal(err)
	}
	// Seeding again leaves existing products as they are, whatever the seed says.
	if n, err := s.SeedProducts(ctx, []order.Product{product("A", 999, false), product("E", 500, true)}); err != nil || n != 1 {
		t.Fatalf("SeedProducts again = %d, %v; want 1", n, err)
	}
	a, err := s.Product(ctx, "A")
	if err != nil || a != product("A", 100, true) {
		t.Fatalf("Product(A) = %+v, %v", a, err)
	}
	if _, err := s.Product(ctx, "Z"); !errors.Is(err, order.ErrProductNotFound) {
		t.Errorf("Product(Z) = %v, want ErrProductNotFound", err)
	}
	got, err := s.Products(ctx, []string{"A", "C", "Z"})
	if err != nil || len(got) != 2 || got["C"].Active || got["A"].PriceMinor != 100 {
		t.Errorf("Products(A, C, Z) = %+v, %v", got, err)
	}

	next := a
	next.PriceMinor, next.Active, next.Version, next.UpdateTime = 150, false, 2, now.Add(time.Second)
	if err := s.UpdateProduct(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateProduct(ctx, next); !errors.Is(err, order.ErrProductChanged) {
		t.Errorf("UpdateProduct on a moved version = %v, want ErrProductChanged", err)
	}
	if a, _ := s.Product(ctx, "A"); a != next {
		t.Errorf("after UpdateProduct: %+v, want %+v", a, next)
	}

	list := func(inactive bool, after string, limit int) string {
		ps, err := s.ListProducts(ctx, inactive, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		var skus string
		for _, p := range ps {
			skus += p.SKU
		}
		return skus
	}
	for _, tt := range []struct {
		inactive bool
		after    string
		limit    int
		want     string
	}{
		{false, "", 10, "BDE"},
		{true, "", 10, "ABCDE"},
		{true, "B", 2, "CD"},
		{false, "B", 1, "D"},
	} {
		if got := list(tt.inactive, tt.after, tt.limit); got != tt.want {
			t.Errorf("ListProducts(%v, %q, %d) = %s, want %s", tt.inactive, tt.after, tt.limit, got, tt.want)
		}
	}
}
