package order

import (
	"context"
	"fmt"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/money"
	"github.com/meshmart/meshmart/pkg/paging"
)

// Product is one thing the shop sells, at one price in one currency. Orders are priced from it.
type Product struct {
	SKU, Name  string
	Currency   string
	PriceMinor int64
	Active     bool
	// Version grows by one with every change; the etag derives from it.
	Version                int64
	CreateTime, UpdateTime time.Time
}

// Etag is the opaque version clients send back for conditional updates.
func (p Product) Etag() string { return fmt.Sprintf("v%d", p.Version) }

// Cursor is p's position in the SKU order of products (its ID is the SKU; the time is unused).
func (p Product) Cursor() paging.Cursor { return paging.Cursor{ID: p.SKU} }

// MaxPriceMinor bounds a product's price as the contract bounds a line's, so that no order total
// can overflow (see total).
const MaxPriceMinor = 100_000_000_000

// Catalog errors.
var (
	ErrProductNotFound = fault.New(fault.NotFound, "product not found")
	ErrProductExists   = fault.New(fault.AlreadyExists, "a product with this SKU already exists")
	// ErrProductChanged: the product's etag no longer matches; nothing was changed.
	ErrProductChanged = fault.New(fault.Aborted, "the product was changed by another call; read it again")
	// ErrPriceMismatch: the client sent a price or currency other than the catalog's. Instances
	// list each differing line as a PreconditionFailure violation (type PRICE, subject the SKU).
	ErrPriceMismatch = fault.New(fault.FailedPrecondition, "the prices sent differ from the catalog's; "+
		"send no price and the catalog's is charged")
)

// ProductStore keeps the catalog. The order store implements it beside Store.
type ProductStore interface {
	// CreateProduct stores p, failing with ErrProductExists when its SKU is taken.
	CreateProduct(ctx context.Context, p Product) error
	// Product returns the product with sku, or ErrProductNotFound.
	Product(ctx context.Context, sku string) (Product, error)
	// Products returns the products with the given SKUs that exist, by SKU.
	Products(ctx context.Context, skus []string) (map[string]Product, error)
	// UpdateProduct stores p provided the stored version is p.Version-1, else ErrProductChanged.
	UpdateProduct(ctx context.Context, p Product) error
	// ListProducts returns up to limit products in SKU order after afterSKU, inactive ones too
	// when asked.
	ListProducts(ctx context.Context, includeInactive bool, afterSKU string, limit int) ([]Product, error)
	// SeedProducts stores the products whose SKU is not taken yet, leaving existing ones as they
	// are, and reports how many it added.
	SeedProducts(ctx context.Context, ps []Product) (int, error)
}

// Catalog carries out the catalog use cases: anyone reads it, admins change it.
type Catalog struct {
	store ProductStore
	pages *paging.Codec
	now   func() time.Time
}

// NewCatalog returns the catalog kept in store; pageKey signs page tokens (see paging.NewCodec).
func NewCatalog(store ProductStore, pageKey func(context.Context) ([]byte, error)) *Catalog {
	return &Catalog{store: store, pages: paging.NewCodec(pageKey), now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

// ProductPatch names the fields UpdateProduct changes; nil leaves a field as it is.
type ProductPatch struct {
	Name       *string
	Currency   *string
	PriceMinor *int64
	Active     *bool
}

// check validates a product's fields as the contract does, and its currency against ISO 4217,
// which the contract's pattern cannot.
func (p Product) check() error {
	switch {
	case !skuPattern(p.SKU):
		return fault.Invalid("product.sku", "must be 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit")
	case p.Name == "" || len(p.Name) > 200:
		return fault.Invalid("product.name", "must be 1 to 200 characters")
	case p.PriceMinor <= 0 || p.PriceMinor > MaxPriceMinor:
		return fault.Invalid("product.price.minor_units", "must be above 0 and at most 100000000000")
	}
	return money.CheckCurrency("product.price.currency_code", p.Currency)
}

func skuPattern(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, c := range []byte(s) {
		alnum := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// Create adds product p for an admin.
func (c *Catalog) Create(ctx context.Context, caller auth.Identity, p Product) (Product, error) {
	if !caller.IsAdmin() {
		return Product{}, ErrPermissionDenied
	}
	if err := p.check(); err != nil {
		return Product{}, err
	}
	now := c.now()
	p.Version, p.CreateTime, p.UpdateTime = 1, now, now
	if err := c.store.CreateProduct(ctx, p); err != nil {
		return Product{}, err
	}
	return p, nil
}

// Update changes product sku for an admin. A non-empty etag must match the stored product's.
func (c *Catalog) Update(ctx context.Context, caller auth.Identity, sku, etag string, patch ProductPatch) (Product, error) {
	if !caller.IsAdmin() {
		return Product{}, ErrPermissionDenied
	}
	p, err := c.store.Product(ctx, sku)
	if err != nil {
		return Product{}, err
	}
	if etag != "" && etag != p.Etag() {
		return Product{}, ErrProductChanged
	}
	next := p
	if patch.Name != nil {
		next.Name = *patch.Name
	}
	if patch.Currency != nil {
		next.Currency = *patch.Currency
	}
	if patch.PriceMinor != nil {
		next.PriceMinor = *patch.PriceMinor
	}
	if patch.Active != nil {
		next.Active = *patch.Active
	}
	if err := next.check(); err != nil {
		return Product{}, err
	}
	next.Version, next.UpdateTime = p.Version+1, c.now()
	if err := c.store.UpdateProduct(ctx, next); err != nil {
		return Product{}, err
	}
	return next, nil
}

// Get returns one product, active or not.
func (c *Catalog) Get(ctx context.Context, sku string) (Product, error) {
	return c.store.Product(ctx, sku)
}

// productFilter is what a ListProducts page token is bound to.
type productFilter struct{ IncludeInactive bool }

// List returns one page of products in SKU order and the next page's token ("" on the last).
func (c *Catalog) List(ctx context.Context, includeInactive bool, pageSize int, pageToken string) ([]Product, string, error) {
	return paging.List(ctx, c.pages, "ListProducts", productFilter{includeInactive}, pageSize, pageToken,
		func(after *paging.Cursor, limit int) ([]Product, error) {
			var from string
			if after != nil {
				from = after.ID
			}
			return c.store.ListProducts(ctx, includeInactive, from, limit)
		}, Product.Cursor)
}

// Seed adds the products of ps whose SKU is not in the catalog yet and reports how many; products
// already there, perhaps changed by an admin since, are left alone, so seeding at every start is
// harmless. Every product is checked first: a bad seed adds nothing.
func (c *Catalog) Seed(ctx context.Context, ps []Product) (int, error) {
	now := c.now()
	for i := range ps {
		if err := ps[i].check(); err != nil {
			return 0, fmt.Errorf("seed product %d (%q): %w", i, ps[i].SKU, err)
		}
		ps[i].Version, ps[i].CreateTime, ps[i].UpdateTime = 1, now, now
	}
	return c.store.SeedProducts(ctx, ps)
}

// price sets every item's unit price from the catalog and returns the order's currency. An
// unknown or inactive SKU is InvalidArgument naming items[i].sku, as is an order whose products
// are in more than one currency; a client-sent price (or currency) that differs from the
// catalog's is ErrPriceMismatch naming every differing SKU. An item sent without a price gets the
// catalog's.
func price(ctx context.Context, products ProductStore, in CreateInput) ([]Item, string, error) {
	skus := make([]string, len(in.Items))
	for i, it := range in.Items {
		skus[i] = it.SKU
	}
	catalog, err := products.Products(ctx, skus)
	if err != nil {
		return nil, "", err
	}
	for i, it := range in.Items {
		if it.Quantity <= 0 {
			return nil, "", fault.Invalid(fmt.Sprintf("items[%d]", i), "quantity must be positive")
		}
	}
	items := make([]Item, len(in.Items))
	currency := ""
	var mismatches []fault.Violation
	for i, it := range in.Items {
		p, ok := catalog[it.SKU]
		if !ok || !p.Active {
			return nil, "", fault.Invalid(fmt.Sprintf("items[%d].sku", i), "no product with this SKU is on sale")
		}
		if currency == "" {
			currency = p.Currency
		} else if p.Currency != currency {
			return nil, "", fault.Invalid(fmt.Sprintf("items[%d].sku", i),
				fmt.Sprintf("priced in %s while the order's other items are in %s: an order is in one currency", p.Currency, currency))
		}
		if it.UnitPriceMinor != 0 && it.UnitPriceMinor != p.PriceMinor {
			mismatches = append(mismatches, fault.Violation{Type: "PRICE", Subject: it.SKU,
				Description: fmt.Sprintf("sent unit price %d, catalog price %d %s", it.UnitPriceMinor, p.PriceMinor, p.Currency)})
		}
		items[i] = Item{SKU: it.SKU, Quantity: it.Quantity, UnitPriceMinor: p.PriceMinor}
	}
	if in.Currency != "" && in.Currency != currency {
		mismatches = append(mismatches, fault.Violation{Type: "CURRENCY", Subject: "currency_code",
			Description: fmt.Sprintf("sent currency %s, the catalog prices these items in %s", in.Currency, currency)})
	}
	if len(mismatches) > 0 {
		return nil, "", ErrPriceMismatch.WithViolations(mismatches...)
	}
	return items, currency, nil
}
