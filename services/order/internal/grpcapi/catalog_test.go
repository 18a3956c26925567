package grpcapi_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/meshmart/meshmart/pkg/testkit"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
)

func TestCatalogService(t *testing.T) {
	t.Parallel()
	cc, as, _ := newConn(t)
	c := orderv1.NewCatalogServiceClient(cc)
	anonymous := context.Background()

	// Browsing is public: no token needed; inactive products only when asked.
	list, err := c.ListProducts(anonymous, &orderv1.ListProductsRequest{})
	if err != nil || len(list.GetProducts()) != 2 || list.GetProducts()[0].GetSku() != "BOOK-1" ||
		list.GetProducts()[0].GetPrice().GetMinorUnits() != 1999 || list.GetProducts()[0].GetPrice().GetCurrencyCode() != "USD" {
		t.Fatalf("anonymous ListProducts = %v, %v", list, err)
	}
	all, err := c.ListProducts(anonymous, &orderv1.ListProductsRequest{IncludeInactive: true, PageSize: 2})
	if err != nil || len(all.GetProducts()) != 2 || all.GetNextPageToken() == "" {
		t.Fatalf("first page with inactive = %v, %v", all, err)
	}
	rest, err := c.ListProducts(anonymous, &orderv1.ListProductsRequest{IncludeInactive: true, PageSize: 2, PageToken: all.GetNextPageToken()})
	if err != nil || len(rest.GetProducts()) != 1 || rest.GetProducts()[0].GetSku() != "PEN-7" || rest.GetNextPageToken() != "" {
		t.Fatalf("second page = %v, %v", rest, err)
	}
	_, err = c.ListProducts(anonymous, &orderv1.ListProductsRequest{PageToken: all.GetNextPageToken()})
	code(t, err, codes.InvalidArgument) // a token of another filter
	lamp, err := c.GetProduct(anonymous, &orderv1.GetProductRequest{Sku: "OLD-LAMP"})
	if err != nil || lamp.GetProduct().GetActive() || lamp.GetProduct().GetEtag() != "v1" {
		t.Fatalf("GetProduct(OLD-LAMP) = %v, %v", lamp, err)
	}
	_, err = c.GetProduct(anonymous, &orderv1.GetProductRequest{Sku: "NOPE"})
	code(t, err, codes.NotFound)

	mug := &orderv1.Product{Sku: "MUG-3", Name: "Mug", Price: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 1200}, Active: true}
	tests := []struct {
		name  string
		ctx   context.Context
		p     *orderv1.Product
		want  codes.Code
		field string
	}{
		{"anonymous", anonymous, mug, codes.Unauthenticated, ""},
		{"user", as["alice"], mug, codes.PermissionDenied, ""},
		{"test currency", as["admin"], &orderv1.Product{Sku: "X-1", Name: "X", Price: &moneyv1.Money{CurrencyCode: "XTS", MinorUnits: 1}}, codes.InvalidArgument, "product.price.currency_code"},
		{"lower case currency", as["admin"], &orderv1.Product{Sku: "X-1", Name: "X", Price: &moneyv1.Money{CurrencyCode: "usd", MinorUnits: 1}}, codes.InvalidArgument, "product.price.currency_code"},
		{"zero price", as["admin"], &orderv1.Product{Sku: "X-1", Name: "X", Price: &moneyv1.Money{CurrencyCode: "USD"}}, codes.InvalidArgument, "product.price"},
		{"no price", as["admin"], &orderv1.Product{Sku: "X-1", Name: "X"}, codes.InvalidArgument, "product"},
		{"no name", as["admin"], &orderv1.Product{Sku: "X-1", Price: mug.GetPrice()}, codes.InvalidArgument, "product"},
		{"bad sku", as["admin"], &orderv1.Product{Sku: "a b", Name: "X", Price: mug.GetPrice()}, codes.InvalidArgument, "product.sku"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateProduct(tt.ctx, &orderv1.CreateProductRequest{Product: tt.p})
			code(t, err, tt.want)
			if tt.field != "" && !strings.Contains(strings.Join(testkit.InvalidFields(err), " "), tt.field) {
				t.Errorf("field violations %v, want %s", testkit.InvalidFields(err), tt.field)
			}
		})
	}
	created, err := c.CreateProduct(as["admin"], &orderv1.CreateProductRequest{Product: mug})
	if err != nil || created.GetProduct().GetEtag() != "v1" || created.GetProduct().GetCreateTime() == nil {
		t.Fatalf("CreateProduct = %v, %v", created, err)
	}
	_, err = c.CreateProduct(as["admin"], &orderv1.CreateProductRequest{Product: mug})
	code(t, err, codes.AlreadyExists)

	off := &orderv1.UpdateProductRequest{Product: &orderv1.Product{Sku: "MUG-3", Etag: "v1"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"active"}}}
	_, err = c.UpdateProduct(as["alice"], off)
	code(t, err, codes.PermissionDenied)
	updated, err := c.UpdateProduct(as["admin"], off)
	if err != nil || updated.GetProduct().GetActive() || updated.GetProduct().GetEtag() != "v2" || updated.GetProduct().GetPrice().GetMinorUnits() != 1200 {
		t.Fatalf("UpdateProduct(active=false) = %v, %v", updated, err)
	}
	_, err = c.UpdateProduct(as["admin"], off)
	code(t, err, codes.Aborted)
	repriced, err := c.UpdateProduct(as["admin"], &orderv1.UpdateProductRequest{
		Product:    &orderv1.Product{Sku: "MUG-3", Price: &moneyv1.Money{CurrencyCode: "EUR", MinorUnits: 1100}},
		UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"price", "active"}}})
	if err != nil || repriced.GetProduct().GetPrice().GetCurrencyCode() != "EUR" || repriced.GetProduct().GetActive() {
		t.Fatalf("UpdateProduct(price) = %v, %v", repriced, err)
	}
	_, err = c.UpdateProduct(as["admin"], &orderv1.UpdateProductRequest{Product: &orderv1.Product{Sku: "MUG-3"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}})
	code(t, err, codes.InvalidArgument) // a name may not be cleared
	_, err = c.UpdateProduct(as["admin"], &orderv1.UpdateProductRequest{Product: &orderv1.Product{Sku: "MUG-3"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"sku"}}})
	code(t, err, codes.InvalidArgument)
}

// The attack "the customer sets the price" over the wire: a different price is
// FAILED_PRECONDITION with a PreconditionFailure naming the SKU, and unknown or inactive SKUs
// are INVALID_ARGUMENT naming items[i].sku.
func TestCreateOrderPricesFromTheCatalog(t *testing.T) {
	t.Parallel()
	c, as, orders := newClient(t)
	cheap := orderReq("tok_approve", "cheap")
	cheap.Items[1].UnitPriceMinor = 1
	_, err := c.CreateOrder(as["alice"], cheap)
	code(t, err, codes.FailedPrecondition)
	violations := testkit.PreconditionViolations(err)
	if len(violations) != 1 || !strings.HasPrefix(violations[0], "PRICE PEN-7: ") || !strings.Contains(violations[0], "250") {
		t.Fatalf("violations = %q, want one PRICE violation naming PEN-7 and its catalog price", violations)
	}
	if _, err := orders.GetByKey(context.Background(), alice, "cheap"); err == nil {
		t.Error("the refused order was stored")
	}
	for _, tt := range []struct {
		name  string
		items []*orderv1.LineItem
		field string
	}{
		{"unknown", []*orderv1.LineItem{{Sku: "BOOK-1", Quantity: 1}, {Sku: "NOPE", Quantity: 1}}, "items[1].sku"},
		{"inactive", []*orderv1.LineItem{{Sku: "OLD-LAMP", Quantity: 1}}, "items[0].sku"},
	} {
		req := orderReq("tok_approve", tt.name)
		req.Items = tt.items
		_, err := c.CreateOrder(as["alice"], req)
		code(t, err, codes.InvalidArgument)
		if got := testkit.InvalidFields(err); len(got) != 1 || got[0] != tt.field {
			t.Errorf("%s: field violations %v, want %s", tt.name, got, tt.field)
		}
	}
	paid := create(t, c, as["alice"], "tok_approve", "catalog")
	if paid.GetTotal().GetMinorUnits() != 2*1999+3*250 || paid.GetItems()[0].GetUnitPriceMinor() != 1999 {
		t.Errorf("order without prices = %v, want the catalog's", paid)
	}
}
