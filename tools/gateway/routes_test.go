package gateway

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// route is one HTTP binding of an RPC and the check that it answers as that RPC.
type route struct {
	rpc             string // full method name: meshmart.user.v1.UserService/CreateUser
	method, pattern string // as in the google.api.http option
	check           func(t *testing.T, f *fixture)
}

// fixture is what the route checks share: a user with a paid order, and the admin.
type fixture struct {
	ada   account
	admin account
	order *orderv1.Order // ada's, paid
}

// routes are the checks of every binding; TestEveryBindingHasACheck keeps the list complete.
var routes = []route{
	{"meshmart.user.v1.UserService/CreateUser", "POST", "/v1/users", func(t *testing.T, f *fixture) {
		sfx := suffix()
		resp := &userv1.CreateUserResponse{}
		do(t, request{method: "POST", path: "/v1/users", body: fmt.Sprintf(
			`{"email":"grace-%s@example.com","username":"grace-%s","password":%q,"givenName":"Grace","familyName":"Hopper"}`, sfx, sfx, loadkit.Password)}).ok(t, resp)
		u := resp.GetUser()
		if u.GetId() == "" || u.GetEmail() != "grace-"+sfx+"@example.com" || u.GetFamilyName() != "Hopper" ||
			!slices.Equal(u.GetRoles(), []userv1.Role{userv1.Role_ROLE_USER}) {
			t.Errorf("created %v, want grace-%s with an id and ROLE_USER", u, sfx)
		}
	}},
	{"meshmart.user.v1.UserService/Login", "POST", "/v1/auth:login", func(t *testing.T, f *fixture) {
		login := logIn(t, f.ada.email, f.ada.password)
		if login.GetUser().GetId() != f.ada.id || login.GetRefreshToken() == "" || login.GetTokenType() != "Bearer" {
			t.Errorf("login answered %v for %s", login.GetUser(), f.ada.id)
		}
	}},
	{"meshmart.user.v1.UserService/GetUser", "GET", "/v1/users/{id}", func(t *testing.T, f *fixture) {
		resp := &userv1.GetUserResponse{}
		do(t, request{method: "GET", path: "/v1/users/" + f.ada.id, token: f.ada.token()}).ok(t, resp)
		if resp.GetUser().GetId() != f.ada.id || resp.GetUser().GetEmail() != f.ada.email {
			t.Errorf("got %v, want %s", resp.GetUser(), f.ada.email)
		}
	}},
	{"meshmart.user.v1.UserService/GetUser", "GET", "/v1/users:lookup", func(t *testing.T, f *fixture) {
		for _, q := range []string{"email=" + url.QueryEscape(strings.ToUpper(f.ada.email)), "username=" + f.ada.username} {
			resp := &userv1.GetUserResponse{}
			do(t, request{method: "GET", path: "/v1/users:lookup?" + q, token: f.ada.token()}).ok(t, resp)
			if resp.GetUser().GetId() != f.ada.id {
				t.Errorf("lookup by %s found %v, want %s", q, resp.GetUser(), f.ada.id)
			}
		}
	}},
	{"meshmart.user.v1.UserService/UpdateUser", "PATCH", "/v1/users/{user.id}", func(t *testing.T, f *fixture) {
		// Without update_mask, grpc-gateway makes it of the body's fields: givenName alone.
		resp := &userv1.UpdateUserResponse{}
		do(t, request{method: "PATCH", path: "/v1/users/" + f.ada.id, token: f.ada.token(), body: `{"givenName":"Augusta"}`}).ok(t, resp)
		if u := resp.GetUser(); u.GetGivenName() != "Augusta" || u.GetUsername() != f.ada.username {
			t.Errorf("after a PATCH of givenName: %v", u)
		}
		// With ?updateMask=, only the fields it names change, whatever else the body holds. A query
		// parameter's mask is taken as is by grpc-gateway (runtime.PopulateQueryParameters splits
		// it on commas): its paths are the proto field names, not the JSON ones.
		resp = &userv1.UpdateUserResponse{}
		do(t, request{method: "PATCH", path: "/v1/users/" + f.ada.id + "?updateMask=family_name", token: f.ada.token(),
			body: `{"givenName":"Ignored","familyName":"Lovelace"}`}).ok(t, resp)
		if u := resp.GetUser(); u.GetGivenName() != "Augusta" || u.GetFamilyName() != "Lovelace" {
			t.Errorf("after a PATCH with updateMask=family_name: given %q, family %q; want Augusta Lovelace", u.GetGivenName(), u.GetFamilyName())
		}
	}},
	{"meshmart.user.v1.UserService/DeleteUser", "DELETE", "/v1/users/{id}", func(t *testing.T, f *fixture) {
		gone := signUp(t, "gone")
		resp := &userv1.DeleteUserResponse{}
		do(t, request{method: "DELETE", path: "/v1/users/" + gone.id, token: gone.token()}).ok(t, resp)
		if resp.GetUser().GetId() != gone.id || resp.GetUser().GetDeleteTime() == nil {
			t.Errorf("deleted %v, want %s with a delete time", resp.GetUser(), gone.id)
		}
		do(t, request{method: "GET", path: "/v1/users/" + gone.id, token: f.admin.token()}).status(t, http.StatusNotFound)
	}},
	{"meshmart.user.v1.UserService/ListUsers", "GET", "/v1/users", func(t *testing.T, f *fixture) {
		resp := &userv1.ListUsersResponse{}
		do(t, request{method: "GET", path: "/v1/users?pageSize=1&status=USER_STATUS_ACTIVE", token: f.admin.token()}).ok(t, resp)
		if len(resp.GetUsers()) != 1 || resp.GetNextPageToken() == "" {
			t.Fatalf("pageSize=1 gave %d users and next page token %q, want 1 and a token", len(resp.GetUsers()), resp.GetNextPageToken())
		}
		if s := resp.GetUsers()[0].GetStatus(); s != userv1.UserStatus_USER_STATUS_ACTIVE {
			t.Errorf("status=USER_STATUS_ACTIVE listed a user %v", s)
		}
	}},
	{"meshmart.user.v1.UserService/ExportUsers", "GET", "/v1/users:export", func(t *testing.T, f *fixture) {
		if ids := exportedIDs(t, f.admin.token()); !slices.Contains(ids, f.ada.id) {
			t.Errorf("the export of %d users lacks %s", len(ids), f.ada.id)
		}
	}},
	{"meshmart.user.v1.UserService/ImportUsers", "POST", "/v1/users:import", func(t *testing.T, f *fixture) {
		// A client stream over REST is newline-delimited JSON, one request per line.
		var body strings.Builder
		for i := range 2 {
			sfx := suffix()
			fmt.Fprintf(&body, `{"user":{"email":"imported-%s@example.com","username":"imported-%s","password":%q,"givenName":"Imported %d"}}`+"\n",
				sfx, sfx, loadkit.Password, i)
		}
		resp := &userv1.ImportUsersResponse{}
		do(t, request{method: "POST", path: "/v1/users:import", token: f.admin.token(), body: body.String()}).ok(t, resp)
		if resp.GetCreatedCount() != 2 || resp.GetFailedCount() != 0 {
			t.Errorf("import answered %v, want 2 created", resp)
		}
	}},
	{"meshmart.user.v1.UserService/ListTokenKeys", "GET", "/v1/token-keys", func(t *testing.T, f *fixture) {
		resp := &userv1.ListTokenKeysResponse{}
		do(t, request{method: "GET", path: "/v1/token-keys"}).ok(t, resp)
		if len(resp.GetKeys()) == 0 || len(resp.GetKeys()[0].GetPublicKey()) == 0 {
			t.Errorf("token keys %v, want at least one with its public key", resp)
		}
	}},
	{"meshmart.user.v1.UserService/RefreshToken", "POST", "/v1/auth:refresh", func(t *testing.T, f *fixture) {
		login := logIn(t, f.ada.email, f.ada.password)
		resp := &userv1.RefreshTokenResponse{}
		do(t, request{method: "POST", path: "/v1/auth:refresh", body: fmt.Sprintf(`{"refreshToken":%q}`, login.GetRefreshToken())}).ok(t, resp)
		if resp.GetAccessToken() == "" || resp.GetRefreshToken() == login.GetRefreshToken() {
			t.Fatalf("refresh answered no new tokens")
		}
		do(t, request{method: "GET", path: "/v1/users/" + f.ada.id, token: resp.GetAccessToken()}).ok(t, nil)
	}},
	{"meshmart.user.v1.UserService/Logout", "POST", "/v1/auth:logout", func(t *testing.T, f *fixture) {
		login := logIn(t, f.ada.email, f.ada.password)
		do(t, request{method: "POST", path: "/v1/auth:logout", token: login.GetAccessToken(),
			body: fmt.Sprintf(`{"refreshToken":%q}`, login.GetRefreshToken())}).ok(t, &userv1.LogoutResponse{})
		do(t, request{method: "POST", path: "/v1/auth:refresh", body: fmt.Sprintf(`{"refreshToken":%q}`, login.GetRefreshToken())}).
			status(t, http.StatusUnauthorized)
	}},
	{"meshmart.user.v1.UserService/ChangePassword", "POST", "/v1/auth:change-password", func(t *testing.T, f *fixture) {
		who := signUp(t, "rotator")
		resp := &userv1.ChangePasswordResponse{}
		do(t, request{method: "POST", path: "/v1/auth:change-password", token: who.token(),
			body: fmt.Sprintf(`{"currentPassword":%q,"newPassword":"another-long-password"}`, who.password)}).ok(t, resp)
		if resp.GetUser().GetId() != who.id {
			t.Errorf("changed the password of %v, want %s", resp.GetUser(), who.id)
		}
		logIn(t, who.email, "another-long-password")
	}},
	{"meshmart.order.v1.OrderService/CreateOrder", "POST", "/v1/orders", func(t *testing.T, f *fixture) {
		o := createOrder(t, f.ada, "create-"+suffix())
		if o.GetUserId() != f.ada.id || o.GetTotal().GetMinorUnits() != loadkit.OrderTotal || o.GetTotal().GetCurrencyCode() != "USD" {
			t.Errorf("created %v, want ada's order of %d USD cents", o, loadkit.OrderTotal)
		}
	}},
	{"meshmart.order.v1.OrderService/GetOrder", "GET", "/v1/orders/{id}", func(t *testing.T, f *fixture) {
		resp := &orderv1.GetOrderResponse{}
		do(t, request{method: "GET", path: "/v1/orders/" + f.order.GetId(), token: f.ada.token()}).ok(t, resp)
		if o := resp.GetOrder(); o.GetId() != f.order.GetId() || o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID ||
			o.GetTotal().GetMinorUnits() != loadkit.OrderTotal || len(o.GetItems()) != 2 {
			t.Errorf("got %v, want %v", o, f.order)
		}
	}},
	{"meshmart.order.v1.OrderService/ListOrders", "GET", "/v1/orders", func(t *testing.T, f *fixture) {
		createOrder(t, f.ada, "list-"+suffix()) // two paid orders at least, so a page of one has a next
		resp := &orderv1.ListOrdersResponse{}
		do(t, request{method: "GET", path: "/v1/orders?pageSize=1&status=ORDER_STATUS_PAID", token: f.ada.token()}).ok(t, resp)
		if len(resp.GetOrders()) != 1 || resp.GetNextPageToken() == "" {
			t.Fatalf("pageSize=1 gave %d orders and next page token %q, want 1 and a token", len(resp.GetOrders()), resp.GetNextPageToken())
		}
		if o := resp.GetOrders()[0]; o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID || o.GetUserId() != f.ada.id {
			t.Errorf("status=ORDER_STATUS_PAID listed %v", o)
		}
	}},
	{"meshmart.order.v1.OrderService/CancelOrder", "POST", "/v1/orders/{id}:cancel", func(t *testing.T, f *fixture) {
		o := createOrder(t, f.ada, "cancel-"+suffix())
		resp := &orderv1.CancelOrderResponse{}
		do(t, request{method: "POST", path: "/v1/orders/" + o.GetId() + ":cancel", token: f.ada.token(), body: `{"reason":"changed my mind"}`}).ok(t, resp)
		if s := resp.GetOrder().GetStatus(); resp.GetOrder().GetId() != o.GetId() ||
			(s != orderv1.OrderStatus_ORDER_STATUS_CANCELLED && s != orderv1.OrderStatus_ORDER_STATUS_CANCELLING) {
			t.Errorf("cancel answered %v", resp.GetOrder())
		}
	}},
	{"meshmart.order.v1.OrderService/TrackOrders", "POST", "/v1/orders:track", func(t *testing.T, f *fixture) {
		// A bidirectional stream over REST: requests as NDJSON in the body, updates as NDJSON lines.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		resp := send(t, ctx, request{method: "POST", path: "/v1/orders:track", token: f.ada.token(),
			body: fmt.Sprintf(`{"subscribeOrderId":%q}`, f.order.GetId())})
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HTTP %d", resp.StatusCode)
		}
		line, err := bufio.NewReader(resp.Body).ReadBytes('\n')
		if err != nil {
			t.Fatalf("no update: %v", err)
		}
		got := &orderv1.TrackOrdersResponse{}
		if err := protojson.Unmarshal(unwrapResult(t, line), got); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if u := got.GetUpdate(); u.GetType() != orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_SUBSCRIBED || u.GetOrder().GetId() != f.order.GetId() {
			t.Errorf("first update %v, want SUBSCRIBED to %s", u, f.order.GetId())
		}
	}},
	{"meshmart.order.v1.CatalogService/ListProducts", "GET", "/v1/products", func(t *testing.T, f *fixture) {
		resp := &orderv1.ListProductsResponse{}
		do(t, request{method: "GET", path: "/v1/products?pageSize=2"}).ok(t, resp)
		if len(resp.GetProducts()) != 2 || resp.GetNextPageToken() == "" {
			t.Errorf("pageSize=2 gave %d products and next page token %q", len(resp.GetProducts()), resp.GetNextPageToken())
		}
	}},
	{"meshmart.order.v1.CatalogService/GetProduct", "GET", "/v1/products/{sku}", func(t *testing.T, f *fixture) {
		resp := &orderv1.GetProductResponse{}
		do(t, request{method: "GET", path: "/v1/products/BOOK-1"}).ok(t, resp)
		if p := resp.GetProduct(); p.GetSku() != "BOOK-1" || p.GetPrice().GetMinorUnits() != 1999 {
			t.Errorf("got %v, want BOOK-1 at 1999", p)
		}
	}},
	{"meshmart.order.v1.CatalogService/CreateProduct", "POST", "/v1/products", func(t *testing.T, f *fixture) {
		sku := "E2E-" + strings.ToUpper(suffix())
		if p := createProduct(t, f.admin, sku); p.GetSku() != sku || p.GetName() != "E2E widget" || p.GetPrice().GetMinorUnits() != 1234 {
			t.Errorf("created %v", p)
		}
	}},
	{"meshmart.order.v1.CatalogService/UpdateProduct", "PATCH", "/v1/products/{product.sku}", func(t *testing.T, f *fixture) {
		sku := "E2E-" + strings.ToUpper(suffix())
		createProduct(t, f.admin, sku)
		resp := &orderv1.UpdateProductResponse{}
		do(t, request{method: "PATCH", path: "/v1/products/" + sku + "?updateMask=name", token: f.admin.token(),
			body: `{"name":"E2E gadget","price":{"currencyCode":"USD","minorUnits":1}}`}).ok(t, resp)
		if p := resp.GetProduct(); p.GetName() != "E2E gadget" || p.GetPrice().GetMinorUnits() != 1234 {
			t.Errorf("after a PATCH with updateMask=name: %v; want the new name and the old price", p)
		}
	}},
	{"meshmart.payment.v1.PaymentService/RefundPayment", "POST", "/v1/payments/{payment_id}:refund", func(t *testing.T, f *fixture) {
		o := createOrder(t, f.ada, "refund-"+suffix())
		resp := &paymentv1.RefundPaymentResponse{}
		do(t, request{method: "POST", path: "/v1/payments/" + o.GetPaymentId() + ":refund", token: f.admin.token(),
			body: fmt.Sprintf(`{"amount":{"currencyCode":"USD","minorUnits":100},"reason":"e2e","idempotencyKey":"refund-%s"}`, suffix())}).ok(t, resp)
		if resp.GetRefund().GetAmount().GetMinorUnits() != 100 || resp.GetPayment().GetId() != o.GetPaymentId() ||
			resp.GetPayment().GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED {
			t.Errorf("refund answered %v", resp)
		}
	}},
	{"meshmart.payment.v1.PaymentService/GetPayment", "GET", "/v1/payments/{id}", func(t *testing.T, f *fixture) {
		resp := &paymentv1.GetPaymentResponse{}
		do(t, request{method: "GET", path: "/v1/payments/" + f.order.GetPaymentId(), token: f.ada.token()}).ok(t, resp)
		if p := resp.GetPayment(); p.GetOrderId() != f.order.GetId() || p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
			t.Errorf("got %v, want the captured payment of %s", p, f.order.GetId())
		}
	}},
	{"meshmart.payment.v1.PaymentService/ListPayments", "GET", "/v1/payments", func(t *testing.T, f *fixture) {
		resp := &paymentv1.ListPaymentsResponse{}
		do(t, request{method: "GET", path: "/v1/payments?orderId=" + f.order.GetId(), token: f.ada.token()}).ok(t, resp)
		if len(resp.GetPayments()) != 1 || resp.GetPayments()[0].GetId() != f.order.GetPaymentId() {
			t.Errorf("orderId=%s listed %v, want its one payment", f.order.GetId(), resp.GetPayments())
		}
	}},
	{"meshmart.payment.v1.PaymentService/WatchPayments", "GET", "/v1/payments:watch", func(t *testing.T, f *fixture) {
		// The default answer of a server stream: newline-delimited JSON.
		watchWhileOrdering(t, f.ada, "")
	}},
}

// TestEveryBindingAnswersAsItsRPC calls every HTTP binding of the contracts through the gateway
// and decodes each answer strictly as its RPC's response.
func TestEveryBindingAnswersAsItsRPC(t *testing.T) {
	f := &fixture{ada: signUp(t, "ada"), admin: admin(t)}
	f.order = createOrder(t, f.ada, "fixture-"+suffix())
	for _, r := range routes {
		t.Run(r.method+" "+r.pattern, func(t *testing.T) { r.check(t, f) })
	}
}

// TestEveryBindingHasACheck keeps routes complete: a binding added to the contracts without a
// check here fails, as does a check of a binding that no longer exists.
func TestEveryBindingHasACheck(t *testing.T) {
	files := []protoreflect.FileDescriptor{
		userv1.File_meshmart_user_v1_user_proto, orderv1.File_meshmart_order_v1_order_proto,
		orderv1.File_meshmart_order_v1_catalog_proto, paymentv1.File_meshmart_payment_v1_payment_proto,
	}
	var bound []string
	for _, fd := range files {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				md := sd.Methods().Get(j)
				rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
				if rule == nil {
					continue
				}
				for _, r := range append([]*annotations.HttpRule{rule}, rule.GetAdditionalBindings()...) {
					bound = append(bound, fmt.Sprintf("%s/%s %s", sd.FullName(), md.Name(), binding(r)))
				}
			}
		}
	}
	var checked []string
	for _, r := range routes {
		checked = append(checked, r.rpc+" "+r.method+" "+r.pattern)
	}
	slices.Sort(bound)
	slices.Sort(checked)
	for _, b := range bound {
		if !slices.Contains(checked, b) {
			t.Errorf("binding %s has no check in routes", b)
		}
	}
	for _, c := range checked {
		if !slices.Contains(bound, c) {
			t.Errorf("routes checks %s, which the contracts do not bind", c)
		}
	}
	if len(bound) < 25 {
		t.Errorf("found %d bindings in the contracts, want every public RPC's: %v", len(bound), bound)
	}
}

// binding is an HTTP rule's verb and path template: "GET /v1/users/{id}".
func binding(r *annotations.HttpRule) string {
	switch p := r.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		return "GET " + p.Get
	case *annotations.HttpRule_Post:
		return "POST " + p.Post
	case *annotations.HttpRule_Patch:
		return "PATCH " + p.Patch
	case *annotations.HttpRule_Put:
		return "PUT " + p.Put
	case *annotations.HttpRule_Delete:
		return "DELETE " + p.Delete
	case *annotations.HttpRule_Custom:
		return p.Custom.GetKind() + " " + p.Custom.GetPath()
	}
	return "none"
}

// createOrder places loadkit's order (2 BOOK-1, 3 PEN-7, an approving card) as a, through the
// gateway, and returns it paid.
func createOrder(t *testing.T, a account, key string) *orderv1.Order {
	t.Helper()
	resp := &orderv1.CreateOrderResponse{}
	do(t, request{method: "POST", path: "/v1/orders", token: a.token(), body: fmt.Sprintf(
		`{"items":[{"sku":"BOOK-1","quantity":2},{"sku":"PEN-7","quantity":3}],"paymentMethodToken":"tok_approve","idempotencyKey":%q}`, key)}).ok(t, resp)
	if o := resp.GetOrder(); o.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID || o.GetPaymentId() == "" {
		t.Fatalf("order %v, want it paid", o)
	}
	return resp.GetOrder()
}

// createProduct adds an active product sku at 12.34 USD as the admin, through the gateway.
func createProduct(t *testing.T, admin account, sku string) *orderv1.Product {
	t.Helper()
	resp := &orderv1.CreateProductResponse{}
	do(t, request{method: "POST", path: "/v1/products", token: admin.token(), body: fmt.Sprintf(
		`{"sku":%q,"name":"E2E widget","price":{"currencyCode":"USD","minorUnits":1234},"active":true}`, sku)}).ok(t, resp)
	return resp.GetProduct()
}

// exportedIDs streams every account through GET /v1/users:export and returns their ids.
func exportedIDs(t *testing.T, token string) []string {
	t.Helper()
	resp := do(t, request{method: "GET", path: "/v1/users:export", token: token})
	resp.ok(t, nil)
	var ids []string
	for _, line := range jsonLines(t, resp.body) {
		u := &userv1.ExportUsersResponse{}
		if err := protojson.Unmarshal(line, u); err != nil {
			t.Fatalf("export line %s: %v", line, err)
		}
		ids = append(ids, u.GetUser().GetId())
	}
	return ids
}
