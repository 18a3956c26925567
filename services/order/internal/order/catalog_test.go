package order_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

// TestCreatePricesFromTheCatalog is the attack "the customer sets the price": every line is
// priced from the catalog, a lower (or higher) client price is refused before anything is written
// or charged, and unknown, inactive or mixed-currency SKUs are field violations.
func TestCreatePricesFromTheCatalog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()

	// No price sent: the catalog's is charged.
	o := e.create(t, alice, tokApprove, "no-price")
	if o.Currency != "USD" || o.TotalMinor != 2*1999+3*250 || o.Items[0].UnitPriceMinor != 1999 || o.Items[1].UnitPriceMinor != 250 {
		t.Fatalf("order priced %s %d, items %+v; want USD 4748 at the catalog's prices", o.Currency, o.TotalMinor, o.Items)
	}
	// The catalog's own price and currency, sent as old clients do, are accepted.
	in := input(tokApprove, "same-price")
	in.Items[0].UnitPriceMinor, in.Currency = 1999, "USD"
	if _, err := e.svc.Create(ctx, alice, in); err != nil {
		t.Fatalf("Create with the catalog's prices = %v", err)
	}

	charges := e.payments.chargeCalls()
	cheap := input(tokApprove, "cheap")
	cheap.Items[0].UnitPriceMinor = 1
	_, err := e.svc.Create(ctx, alice, cheap)
	f, ok := fault.As(err)
	if !errors.Is(err, order.ErrPriceMismatch) || !ok || len(f.Violations) != 1 || f.Violations[0].Type != "PRICE" ||
		f.Violations[0].Subject != "BOOK-1" || !strings.Contains(f.Violations[0].Description, "1999") {
		t.Fatalf("Create with a lower price = %v (%+v); want ErrPriceMismatch naming BOOK-1 and its price", err, f)
	}
	if e.payments.chargeCalls() != charges {
		t.Error("a refused price reached the payment service")
	}
	if _, err := e.store.GetByKey(ctx, alice.Subject, "cheap"); !errors.Is(err, order.ErrNotFound) {
		t.Errorf("a refused price stored an order: %v", err)
	}
	otherCurrency := input(tokApprove, "eur")
	otherCurrency.Currency = "EUR"
	if _, err := e.svc.Create(ctx, alice, otherCurrency); !errors.Is(err, order.ErrPriceMismatch) {
		t.Errorf("Create in another currency than the catalog's = %v, want ErrPriceMismatch", err)
	}

	for _, tt := range []struct {
		name  string
		items []order.Item
		field string
	}{
		{"unknown", []order.Item{{SKU: "BOOK-1", Quantity: 1}, {SKU: "NOPE", Quantity: 1}}, "items[1].sku"},
		{"inactive", []order.Item{{SKU: "OLD-LAMP", Quantity: 1}}, "items[0].sku"},
		{"two currencies", []order.Item{{SKU: "BOOK-1", Quantity: 1}, {SKU: "BOOK-1-EU", Quantity: 1}}, "items[1].sku"},
	} {
		in := input(tokApprove, tt.name)
		in.Items = tt.items
		if _, err := e.svc.Create(ctx, alice, in); invalidField(err) != tt.field {
			t.Errorf("%s: %v, want invalid %s", tt.name, err, tt.field)
		}
	}
	if e.payments.chargeCalls() != charges {
		t.Error("a refused order reached the payment service")
	}

	// A retry of an order keeps its prices even when the catalog changed since.
	price := int64(2999)
	if _, err := e.catalog.Update(ctx, admin, "BOOK-1", "", order.ProductPatch{PriceMinor: &price}); err != nil {
		t.Fatal(err)
	}
	again, err := e.svc.Create(ctx, alice, input(tokApprove, "no-price"))
	if err != nil || again.ID != o.ID || again.TotalMinor != o.TotalMinor {
		t.Fatalf("retry after a price change = %+v, %v; want the same order at its prices", again, err)
	}
	newer := e.create(t, alice, tokApprove, "after-change")
	if newer.TotalMinor != 2*2999+3*250 {
		t.Errorf("an order after the price change costs %d, want %d", newer.TotalMinor, 2*2999+3*250)
	}
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := context.Background()
	mug := order.Product{SKU: "MUG-3", Name: "Mug", Currency: "USD", PriceMinor: 1200, Active: true}
	if _, err := e.catalog.Create(ctx, alice, mug); !errors.Is(err, order.ErrPermissionDenied) {
		t.Fatalf("a user's Create = %v, want ErrPermissionDenied", err)
	}
	created, err := e.catalog.Create(ctx, admin, mug)
	if err != nil || created.Etag() != "v1" {
		t.Fatalf("Create = %+v, %v", created, err)
	}
	if _, err := e.catalog.Create(ctx, admin, mug); !errors.Is(err, order.ErrProductExists) {
		t.Errorf("Create of a taken SKU = %v, want ErrProductExists", err)
	}
	for _, tt := range []struct {
		name  string
		edit  func(*order.Product)
		field string
	}{
		{"withdrawn currency", func(p *order.Product) { p.Currency = "DEM" }, "product.price.currency_code"},
		{"test currency", func(p *order.Product) { p.Currency = "XTS" }, "product.price.currency_code"},
		{"zero price", func(p *order.Product) { p.PriceMinor = 0 }, "product.price.minor_units"},
		{"price too high", func(p *order.Product) { p.PriceMinor = order.MaxPriceMinor + 1 }, "product.price.minor_units"},
		{"no name", func(p *order.Product) { p.Name = "" }, "product.name"},
		{"bad sku", func(p *order.Product) { p.SKU = "-x" }, "product.sku"},
	} {
		p := mug
		p.SKU = "NEW-1"
		tt.edit(&p)
		if _, err := e.catalog.Create(ctx, admin, p); invalidField(err) != tt.field {
			t.Errorf("%s: %v, want invalid %s", tt.name, err, tt.field)
		}
	}

	off := false
	if _, err := e.catalog.Update(ctx, alice, "MUG-3", "", order.ProductPatch{Active: &off}); !errors.Is(err, order.ErrPermissionDenied) {
		t.Errorf("a user's Update = %v, want ErrPermissionDenied", err)
	}
	updated, err := e.catalog.Update(ctx, admin, "MUG-3", "v1", order.ProductPatch{Active: &off})
	if err != nil || updated.Active || updated.Etag() != "v2" {
		t.Fatalf("deactivating = %+v, %v", updated, err)
	}
	if _, err := e.catalog.Update(ctx, admin, "MUG-3", "v1", order.ProductPatch{Active: &off}); !errors.Is(err, order.ErrProductChanged) {
		t.Errorf("Update with a stale etag = %v, want ErrProductChanged", err)
	}
	if _, err := e.catalog.Update(ctx, admin, "NOPE", "", order.ProductPatch{Active: &off}); !errors.Is(err, order.ErrProductNotFound) {
		t.Errorf("Update of an unknown SKU = %v, want ErrProductNotFound", err)
	}
	in := input(tokApprove, "mug")
	in.Items = []order.Item{{SKU: "MUG-3", Quantity: 1}}
	if _, err := e.svc.Create(ctx, alice, in); invalidField(err) != "items[0].sku" {
		t.Errorf("ordering a deactivated product = %v, want invalid items[0].sku", err)
	}

	// Pages in SKU order, active products only unless asked.
	var skus []string
	token := ""
	for pages := 0; ; pages++ {
		ps, next, err := e.catalog.List(ctx, false, 2, token)
		if err != nil || pages > 10 {
			t.Fatalf("List = %v after %d pages", err, pages)
		}
		for _, p := range ps {
			skus = append(skus, p.SKU)
		}
		if token = next; token == "" {
			break
		}
	}
	if got := strings.Join(skus, " "); got != "BOOK-1 BOOK-1-EU GOLD PEN-7" {
		t.Errorf("active products = %s", got)
	}
	all, _, err := e.catalog.List(ctx, true, 100, "")
	if err != nil || len(all) != 6 {
		t.Errorf("List with inactive = %d products, %v; want 6", len(all), err)
	}

	// Seeding again adds only what is missing and leaves changed products alone.
	n, err := e.catalog.Seed(ctx, append(testCatalog(), order.Product{SKU: "CAP-1", Name: "Cap", Currency: "EUR", PriceMinor: 900, Active: true}))
	if err != nil || n != 1 {
		t.Fatalf("Seed again = %d, %v; want 1 added", n, err)
	}
	if p, err := e.catalog.Get(ctx, "MUG-3"); err != nil || p.Active {
		t.Errorf("MUG-3 after seeding = %+v, %v; want it still inactive", p, err)
	}
	if _, err := e.catalog.Seed(ctx, []order.Product{{SKU: "BAD-1", Name: "Bad", Currency: "usd", PriceMinor: 1, Active: true}}); err == nil {
		t.Error("a seed with a bad currency was accepted")
	}
}
