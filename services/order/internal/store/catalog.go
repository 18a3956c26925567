package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/meshmart/meshmart/pkg/sqldb"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

const productColumns = "sku, name, currency, price, active, version, create_time, update_time"

func productArgs(p order.Product) []any {
	active := 0
	if p.Active {
		active = 1
	}
	return []any{p.SKU, p.Name, p.Currency, p.PriceMinor, active, p.Version, sqldb.Micros(p.CreateTime), sqldb.Micros(p.UpdateTime)}
}

// CreateProduct implements order.ProductStore.
func (s *Orders) CreateProduct(ctx context.Context, p order.Product) error {
	_, err := s.DB.ExecContext(ctx, s.DB.Rebind("INSERT INTO products ("+productColumns+") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), productArgs(p)...)
	if _, ok := sqldb.UniqueViolation(err); ok {
		return order.ErrProductExists
	}
	if err != nil {
		return fmt.Errorf("create product %s: %w", p.SKU, err)
	}
	return nil
}

// SeedProducts implements order.ProductStore: one insert per product that leaves a taken SKU
// alone, all in one transaction.
func (s *Orders) SeedProducts(ctx context.Context, ps []order.Product) (int, error) {
	added := 0
	err := sqldb.InTx(ctx, s.DB, func(tx *sql.Tx) error {
		q := s.DB.Rebind("INSERT INTO products (" + productColumns + ") VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sku) DO NOTHING")
		for _, p := range ps {
			res, err := tx.ExecContext(ctx, q, productArgs(p)...)
			if err != nil {
				return err
			}
			n, err := res.RowsAffected()
			if err != nil {
				return err
			}
			added += int(n)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("seed products: %w", err)
	}
	return added, nil
}

// Product implements order.ProductStore.
func (s *Orders) Product(ctx context.Context, sku string) (order.Product, error) {
	p, err := scanProduct(s.DB.Read.QueryRowContext(ctx, s.DB.Rebind("SELECT "+productColumns+" FROM products WHERE sku = ?"), sku))
	if errors.Is(err, sql.ErrNoRows) {
		return order.Product{}, order.ErrProductNotFound
	}
	if err != nil {
		return order.Product{}, fmt.Errorf("get product %s: %w", sku, err)
	}
	return p, nil
}

// Products implements order.ProductStore.
func (s *Orders) Products(ctx context.Context, skus []string) (map[string]order.Product, error) {
	out := make(map[string]order.Product, len(skus))
	if len(skus) == 0 {
		return out, nil
	}
	args := make([]any, len(skus))
	for i, sku := range skus {
		args[i] = sku
	}
	ps, err := s.queryProducts(ctx, "SELECT "+productColumns+" FROM products WHERE sku IN ("+placeholders(len(skus))+")", args...)
	for _, p := range ps {
		out[p.SKU] = p
	}
	return out, err
}

// UpdateProduct implements order.ProductStore: a conditional update on the version.
func (s *Orders) UpdateProduct(ctx context.Context, p order.Product) error {
	args := productArgs(p)
	res, err := s.DB.ExecContext(ctx, s.DB.Rebind(`UPDATE products SET name = ?, currency = ?, price = ?, active = ?, version = ?,
		update_time = ? WHERE sku = ? AND version = ?`), args[1], args[2], args[3], args[4], args[5], args[7], p.SKU, p.Version-1)
	if err != nil {
		return fmt.Errorf("update product %s: %w", p.SKU, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errors.Join(err, order.ErrProductChanged)
	}
	return nil
}

// ListProducts implements order.ProductStore.
func (s *Orders) ListProducts(ctx context.Context, includeInactive bool, afterSKU string, limit int) ([]order.Product, error) {
	q := "SELECT " + productColumns + " FROM products WHERE sku > ?"
	if !includeInactive {
		q += " AND active = 1"
	}
	return s.queryProducts(ctx, q+" ORDER BY sku LIMIT ?", afterSKU, limit)
}

func (s *Orders) queryProducts(ctx context.Context, q string, args ...any) ([]order.Product, error) {
	rows, err := s.DB.Read.QueryContext(ctx, s.DB.Rebind(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list products: %w", err)
	}
	defer rows.Close()
	var out []order.Product
	for rows.Next() {
		p, err := scanProduct(rows)
		if err != nil {
			return nil, fmt.Errorf("list products: %w", err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func scanProduct(r scanner) (order.Product, error) {
	var (
		p                order.Product
		active           int
		created, updated int64
	)
	if err := r.Scan(&p.SKU, &p.Name, &p.Currency, &p.PriceMinor, &active, &p.Version, &created, &updated); err != nil {
		return order.Product{}, err
	}
	p.Active = active == 1
	p.CreateTime, p.UpdateTime = sqldb.FromMicros(created), sqldb.FromMicros(updated)
	return p, nil
}
