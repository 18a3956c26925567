package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

// seedFile is the catalog seed's format (services/order/catalog.json is the demo catalog):
// products with their price in minor units of an ISO 4217 currency; inactive ones are stored but
// cannot be ordered.
type seedFile struct {
	Products []struct {
		SKU        string `json:"sku"`
		Name       string `json:"name"`
		Currency   string `json:"currency_code"`
		PriceMinor int64  `json:"price_minor"`
		Inactive   bool   `json:"inactive"`
	} `json:"products"`
}

// seedCatalog adds the products of the seed file at path that the catalog lacks; products
// already there (perhaps changed by an admin since) are left alone, so every replica may seed at
// every start. A file that cannot be read or holds a bad product stops the start.
func seedCatalog(ctx context.Context, catalog *order.Catalog, path string) (int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("catalog seed: %w", err)
	}
	var f seedFile
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return 0, fmt.Errorf("catalog seed %s: %w", path, err)
	}
	ps := make([]order.Product, len(f.Products))
	for i, p := range f.Products {
		ps[i] = order.Product{SKU: p.SKU, Name: p.Name, Currency: p.Currency, PriceMinor: p.PriceMinor, Active: !p.Inactive}
	}
	n, err := catalog.Seed(ctx, ps)
	if err != nil {
		return 0, fmt.Errorf("catalog seed %s: %w", path, err)
	}
	return n, nil
}
