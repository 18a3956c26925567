package security

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/meshmart/meshmart/pkg/testkit"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// Attack: the customer sets the price. A user sends CreateOrder with unit_price_minor of 1 for
// a product the shop sells at 19.99 USD, hoping to be charged what they sent; then tries to
// change the catalog itself (CreateProduct, UpdateProduct) and to order SKUs that are not on sale.
//
// Defence: the order service prices every line from its catalog (migration 0003, seeded from
// services/order/catalog.json). A differing price is FAILED_PRECONDITION with a
// PreconditionFailure naming the SKU, before anything is stored or charged; no price means the
// catalog's; the catalog's write methods are for admins (pkg/authz); unknown and inactive SKUs
// are INVALID_ARGUMENT naming items[i].sku.
func TestCustomerCannotSetThePrice(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		a := r.SignUp(t, "price-"+suffix())

		// Anyone may browse the catalog, with no token.
		book, err := r.Catalog.GetProduct(callCtx(t), &orderv1.GetProductRequest{Sku: "BOOK-1"})
		if err != nil {
			t.Fatalf("anonymous GetProduct: %v", err)
		}
		price := book.GetProduct().GetPrice()
		if price.GetMinorUnits() != 1999 || price.GetCurrencyCode() != "USD" {
			t.Fatalf("BOOK-1 costs %v, want the demo catalog's 1999 USD", price)
		}

		cheap := loadkit.OrderRequest("cheap-" + suffix())
		cheap.Items[0].UnitPriceMinor = 1
		_, err = r.Orders.CreateOrder(a.In(callCtx(t)), cheap)
		wantCode(t, "CreateOrder at 0.01 USD a book", err, codes.FailedPrecondition)
		violations := testkit.PreconditionViolations(err)
		if len(violations) != 1 || !strings.HasPrefix(violations[0], "PRICE BOOK-1: ") || !strings.Contains(violations[0], "1999") {
			t.Errorf("the refusal's PreconditionFailure = %q, want one PRICE violation naming BOOK-1 and its price", violations)
		}
		if paid := payments(t, r, a); len(paid) != 0 {
			t.Fatalf("a refused price was charged: %v", paid)
		}
		if orders, err := r.Orders.ListOrders(a.In(callCtx(t)), &orderv1.ListOrdersRequest{}); err != nil || len(orders.GetOrders()) != 0 {
			t.Fatalf("a refused price stored orders: %v, %v", orders.GetOrders(), err)
		}

		// No price sent: the catalog's is charged.
		resp, err := r.Orders.CreateOrder(a.In(callCtx(t)), loadkit.OrderRequest("fair-"+suffix()))
		if err != nil {
			t.Fatalf("CreateOrder without prices: %v", err)
		}
		o := resp.GetOrder()
		if o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID || o.GetTotal().GetMinorUnits() != loadkit.OrderTotal ||
			o.GetTotal().GetCurrencyCode() != "USD" {
			t.Fatalf("the order is %v at %v, want PAID at %d USD", o.GetStatus(), o.GetTotal(), loadkit.OrderTotal)
		}
		paid := payments(t, r, a)
		if len(paid) != 1 || paid[0].GetAmount().GetMinorUnits() != loadkit.OrderTotal || paid[0].GetAmount().GetCurrencyCode() != "USD" {
			t.Fatalf("payments after one fair order: %v, want one of %d USD", paid, loadkit.OrderTotal)
		}

		// A user cannot change the catalog.
		_, err = r.Catalog.CreateProduct(a.In(callCtx(t)), &orderv1.CreateProductRequest{Product: &orderv1.Product{
			Sku: "FREE-" + suffix(), Name: "Free", Price: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 1}, Active: true}})
		wantCode(t, "a user's CreateProduct", err, codes.PermissionDenied)
		_, err = r.Catalog.UpdateProduct(a.In(callCtx(t)), &orderv1.UpdateProductRequest{
			Product:    &orderv1.Product{Sku: "BOOK-1", Price: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 1}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"price"}}})
		wantCode(t, "a user's UpdateProduct", err, codes.PermissionDenied)
		if after, err := r.Catalog.GetProduct(callCtx(t), &orderv1.GetProductRequest{Sku: "BOOK-1"}); err != nil ||
			after.GetProduct().GetPrice().GetMinorUnits() != 1999 || after.GetProduct().GetEtag() != book.GetProduct().GetEtag() {
			t.Fatalf("BOOK-1 after the user's attempts: %v, %v; want it unchanged", after, err)
		}

		// Unknown and inactive SKUs are field violations; an admin's deactivation takes effect
		// at once.
		admin := r.LogInAdmin(t)
		sku := "SEC-" + suffix()
		if _, err := r.Catalog.CreateProduct(admin.In(callCtx(t)), &orderv1.CreateProductRequest{Product: &orderv1.Product{
			Sku: sku, Name: "Security test product", Price: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 700}, Active: true}}); err != nil {
			t.Fatalf("the admin's CreateProduct: %v", err)
		}
		item := func(sku string) *orderv1.CreateOrderRequest {
			req := loadkit.OrderRequest("sku-" + suffix())
			req.Items = []*orderv1.LineItem{{Sku: sku, Quantity: 1}}
			return req
		}
		if resp, err := r.Orders.CreateOrder(a.In(callCtx(t)), item(sku)); err != nil || resp.GetOrder().GetTotal().GetMinorUnits() != 700 {
			t.Fatalf("ordering the new product: %v, %v; want 700", resp.GetOrder().GetTotal(), err)
		}
		if _, err := r.Catalog.UpdateProduct(admin.In(callCtx(t)), &orderv1.UpdateProductRequest{
			Product: &orderv1.Product{Sku: sku}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"active"}}}); err != nil {
			t.Fatalf("the admin's deactivation: %v", err)
		}
		unknown := loadkit.OrderRequest("unknown-" + suffix())
		unknown.Items = append(unknown.Items, &orderv1.LineItem{Sku: "NO-SUCH-" + suffix(), Quantity: 1})
		for _, tt := range []struct {
			name  string
			req   *orderv1.CreateOrderRequest
			field string
		}{
			{"an unknown SKU", unknown, "items[2].sku"},
			{"a deactivated SKU", item(sku), "items[0].sku"},
			{"the demo catalog's inactive SKU", item("OLD-LAMP"), "items[0].sku"},
		} {
			_, err := r.Orders.CreateOrder(a.In(callCtx(t)), tt.req)
			wantCode(t, tt.name, err, codes.InvalidArgument)
			if got := testkit.InvalidFields(err); len(got) != 1 || got[0] != tt.field {
				t.Errorf("%s: field violations %v, want %s", tt.name, got, tt.field)
			}
		}
		if paid := payments(t, r, a); len(paid) != 2 {
			t.Errorf("the user has %d payments, want 2 (the fair order and the new product)", len(paid))
		}
	})
}
