package proto_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	authzv1 "github.com/meshmart/meshmart/proto/meshmart/authz/v1"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// The generated stubs must cover all four RPC kinds; these assertions fail to compile otherwise.
var (
	_ userv1.UserServiceServer       = userv1.UnimplementedUserServiceServer{}
	_ paymentv1.PaymentServiceServer = paymentv1.UnimplementedPaymentServiceServer{}
	_ orderv1.OrderServiceServer     = orderv1.UnimplementedOrderServiceServer{}
	_ orderv1.CatalogServiceServer   = orderv1.UnimplementedCatalogServiceServer{}

	_ func(userv1.UserServiceClient)               = nil
	_ userv1.UserService_ExportUsersClient         // server streaming
	_ userv1.UserService_ImportUsersClient         // client streaming
	_ paymentv1.PaymentService_WatchPaymentsClient // server streaming
	_ orderv1.OrderService_TrackOrdersClient       // bidirectional streaming
)

// rpcKind is the streaming shape of a method.
type rpcKind string

const (
	unary        rpcKind = "unary"
	serverStream rpcKind = "server streaming"
	clientStream rpcKind = "client streaming"
	bidiStream   rpcKind = "bidi streaming"
)

const (
	unknown      = descriptorpb.MethodOptions_IDEMPOTENCY_UNKNOWN
	noSideEffect = descriptorpb.MethodOptions_NO_SIDE_EFFECTS
	idempotent   = descriptorpb.MethodOptions_IDEMPOTENT
)

type method struct {
	kind  rpcKind
	level descriptorpb.MethodOptions_IdempotencyLevel
}

// TestServiceShapes pins every method's streaming kind and idempotency level: clients derive their
// retry policy from the level, so changing one is a behaviour change that must be deliberate.
func TestServiceShapes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		service protoreflect.ServiceDescriptor
		methods map[string]method
	}{
		{userv1.File_meshmart_user_v1_user_proto.Services().Get(0), map[string]method{
			"CreateUser":    {unary, unknown},
			"Login":         {unary, idempotent},
			"GetUser":       {unary, noSideEffect},
			"UpdateUser":    {unary, idempotent},
			"DeleteUser":    {unary, idempotent},
			"ListUsers":     {unary, noSideEffect},
			"ExportUsers":   {serverStream, noSideEffect},
			"ImportUsers":   {clientStream, unknown},
			"ListTokenKeys": {unary, noSideEffect},
			// A refresh spends its token, so a retry of it is a replay: not idempotent.
			"RefreshToken":   {unary, unknown},
			"Logout":         {unary, idempotent},
			"ChangePassword": {unary, unknown},
		}},
		{paymentv1.File_meshmart_payment_v1_payment_proto.Services().Get(0), map[string]method{
			"CreatePayment":     {unary, idempotent},
			"RefundPayment":     {unary, idempotent},
			"GetPayment":        {unary, noSideEffect},
			"ListPayments":      {unary, noSideEffect},
			"WatchPayments":     {serverStream, noSideEffect},
			"ListPaymentEvents": {unary, noSideEffect},
		}},
		{orderv1.File_meshmart_order_v1_order_proto.Services().Get(0), map[string]method{
			"CreateOrder": {unary, idempotent},
			"GetOrder":    {unary, noSideEffect},
			"ListOrders":  {unary, noSideEffect},
			"CancelOrder": {unary, idempotent},
			"TrackOrders": {bidiStream, unknown},
		}},
		{orderv1.File_meshmart_order_v1_catalog_proto.Services().Get(0), map[string]method{
			"ListProducts":  {unary, noSideEffect},
			"GetProduct":    {unary, noSideEffect},
			"CreateProduct": {unary, unknown},
			"UpdateProduct": {unary, idempotent},
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.service.FullName()), func(t *testing.T) {
			t.Parallel()
			got := map[string]method{}
			methods := tt.service.Methods()
			for i := range methods.Len() {
				m := methods.Get(i)
				opts := m.Options().(*descriptorpb.MethodOptions)
				got[string(m.Name())] = method{kindOf(m), opts.GetIdempotencyLevel()}
			}
			for name, want := range tt.methods {
				if got[name] != want {
					t.Errorf("%s: got %+v, want %+v", name, got[name], want)
				}
			}
			for name := range got {
				if _, ok := tt.methods[name]; !ok {
					t.Errorf("method %s is not pinned by this test", name)
				}
			}
		})
	}
}

// access is a method's authz policy in short: who may call it.
type access struct {
	public, users, admins bool
	services              string // comma-separated, in declared order
}

var (
	public    = access{public: true}
	users     = access{users: true}
	admins    = access{admins: true}
	orderOnly = access{services: "order"}
)

// TestPolicies pins who may call every method of every service in the contracts: the chassis
// enforces these declarations (pkg/authz) and refuses to serve a method without one, so a method
// without a policy, or a changed policy, must be a deliberate, reviewed change of this table.
func TestPolicies(t *testing.T) {
	t.Parallel()
	want := map[string]access{
		"meshmart.user.v1.UserService.CreateUser":    public,
		"meshmart.user.v1.UserService.Login":         public,
		"meshmart.user.v1.UserService.ListTokenKeys": public,
		"meshmart.user.v1.UserService.GetUser":       {users: true, services: "order"},
		"meshmart.user.v1.UserService.UpdateUser":    users,
		"meshmart.user.v1.UserService.DeleteUser":    users,
		"meshmart.user.v1.UserService.ListUsers":     admins,
		"meshmart.user.v1.UserService.ExportUsers":   admins,
		"meshmart.user.v1.UserService.ImportUsers":   admins,
		// The refresh token is the credential.
		"meshmart.user.v1.UserService.RefreshToken":   public,
		"meshmart.user.v1.UserService.Logout":         users,
		"meshmart.user.v1.UserService.ChangePassword": users,

		"meshmart.payment.v1.PaymentService.CreatePayment":     orderOnly,
		"meshmart.payment.v1.PaymentService.RefundPayment":     {admins: true, services: "order"},
		"meshmart.payment.v1.PaymentService.GetPayment":        {users: true, services: "order"},
		"meshmart.payment.v1.PaymentService.ListPayments":      {users: true, services: "order"},
		"meshmart.payment.v1.PaymentService.WatchPayments":     users,
		"meshmart.payment.v1.PaymentService.ListPaymentEvents": orderOnly,

		"meshmart.order.v1.OrderService.CreateOrder": users,
		"meshmart.order.v1.OrderService.GetOrder":    users,
		"meshmart.order.v1.OrderService.ListOrders":  users,
		"meshmart.order.v1.OrderService.CancelOrder": users,
		"meshmart.order.v1.OrderService.TrackOrders": users,

		"meshmart.order.v1.CatalogService.ListProducts":  public,
		"meshmart.order.v1.CatalogService.GetProduct":    public,
		"meshmart.order.v1.CatalogService.CreateProduct": admins,
		"meshmart.order.v1.CatalogService.UpdateProduct": admins,
	}
	got := map[string]access{}
	for _, file := range []protoreflect.FileDescriptor{
		userv1.File_meshmart_user_v1_user_proto,
		paymentv1.File_meshmart_payment_v1_payment_proto,
		orderv1.File_meshmart_order_v1_order_proto,
		orderv1.File_meshmart_order_v1_catalog_proto,
	} {
		for i := range file.Services().Len() {
			methods := file.Services().Get(i).Methods()
			for j := range methods.Len() {
				m := methods.Get(j)
				name := string(m.FullName())
				if !proto.HasExtension(m.Options(), authzv1.E_Policy) {
					t.Errorf("%s declares no (meshmart.authz.v1.policy): the chassis would refuse to serve it", name)
					continue
				}
				p := proto.GetExtension(m.Options(), authzv1.E_Policy).(*authzv1.Policy)
				got[name] = access{p.GetPublic(), p.GetUsers(), p.GetAdmins(), strings.Join(p.GetServices(), ",")}
			}
		}
	}
	for name, w := range want {
		if g, ok := got[name]; ok && g != w {
			t.Errorf("%s: policy %+v, want %+v", name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("the policy of %s is not pinned by this test", name)
		}
	}
	for name := range want {
		if _, ok := got[name]; !ok {
			t.Errorf("%s is pinned by this test but not in the contracts", name)
		}
	}
}

func kindOf(m protoreflect.MethodDescriptor) rpcKind {
	switch {
	case m.IsStreamingClient() && m.IsStreamingServer():
		return bidiStream
	case m.IsStreamingClient():
		return clientStream
	case m.IsStreamingServer():
		return serverStream
	}
	return unary
}

// TestValidationRules checks that the rules written into the contracts accept well-formed requests
// and name the offending field of malformed ones, as the validation interceptor reports them.
func TestValidationRules(t *testing.T) {
	t.Parallel()
	const id = "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90"
	usd := func(n int64) *moneyv1.Money { return &moneyv1.Money{CurrencyCode: "USD", MinorUnits: n} }
	item := func(sku string, qty int32, price int64) *orderv1.LineItem {
		return &orderv1.LineItem{Sku: sku, Quantity: qty, UnitPriceMinor: price}
	}
	signUp := func(edit func(*userv1.CreateUserRequest)) *userv1.CreateUserRequest {
		r := &userv1.CreateUserRequest{Email: "ada@example.com", Username: "ada", Password: "correct horse", GivenName: "Ada"}
		if edit != nil {
			edit(r)
		}
		return r
	}
	order := func(edit func(*orderv1.CreateOrderRequest)) *orderv1.CreateOrderRequest {
		r := &orderv1.CreateOrderRequest{
			Items:              []*orderv1.LineItem{item("BOOK-1", 2, 1999), item("PEN-7", 1, 250)},
			CurrencyCode:       "USD",
			PaymentMethodToken: "tok_approve",
			IdempotencyKey:     "order-1",
		}
		if edit != nil {
			edit(r)
		}
		return r
	}
	product := func(edit func(*orderv1.Product)) *orderv1.Product {
		p := &orderv1.Product{Sku: "BOOK-1", Name: "Book", Price: usd(1999), Active: true}
		if edit != nil {
			edit(p)
		}
		return p
	}
	charge := func(edit func(*paymentv1.CreatePaymentRequest)) *paymentv1.CreatePaymentRequest {
		r := &paymentv1.CreatePaymentRequest{OrderId: id, Amount: usd(4248), PaymentMethodToken: "tok_approve", IdempotencyKey: "order:" + id}
		if edit != nil {
			edit(r)
		}
		return r
	}

	tests := []struct {
		name string
		msg  proto.Message
		want []string // violated field paths or rule ids; empty means valid
	}{
		{"sign-up ok", signUp(nil), nil},
		{"sign-up bad email", signUp(func(r *userv1.CreateUserRequest) { r.Email = "not-an-email" }), []string{"email"}},
		{"sign-up short password", signUp(func(r *userv1.CreateUserRequest) { r.Password = "short" }), []string{"password"}},
		{"sign-up bad username", signUp(func(r *userv1.CreateUserRequest) { r.Username = "-x" }), []string{"username"}},
		{"sign-up missing everything", &userv1.CreateUserRequest{}, []string{"email", "username", "password", "given_name"}},
		{"login needs an identifier", &userv1.LoginRequest{Password: "pw"}, []string{"identifier"}},
		{"login ok", &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: "ada"}, Password: "pw"}, nil},
		{"get by bad id", &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: "42"}}, []string{"id"}},
		{"update ok", &userv1.UpdateUserRequest{
			User:       &userv1.User{Id: id, GivenName: "Augusta"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"given_name"}},
		}, nil},
		{"update immutable path", &userv1.UpdateUserRequest{
			User:       &userv1.User{Id: id},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"create_time"}},
		}, []string{"update_mask"}},
		{"update clears email", &userv1.UpdateUserRequest{
			User:       &userv1.User{Id: id},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"email"}},
		}, []string{"update_user.email_cleared"}},
		{"update without id", &userv1.UpdateUserRequest{
			User:       &userv1.User{GivenName: "Ada"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"given_name"}},
		}, []string{"user"}},
		{"update bad role", &userv1.UpdateUserRequest{
			User:       &userv1.User{Id: id, Roles: []userv1.Role{userv1.Role_ROLE_UNSPECIFIED}},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"roles"}},
		}, []string{"user.roles[0]"}},
		{"list negative page size", &userv1.ListUsersRequest{PageSize: -1}, []string{"page_size"}},
		{"import item is not validated by the interceptor", &userv1.ImportUsersRequest{User: &userv1.CreateUserRequest{}}, nil},

		{"charge ok", charge(nil), nil},
		{"charge zero amount", charge(func(r *paymentv1.CreatePaymentRequest) { r.Amount = usd(0) }), []string{"amount"}},
		{"charge bad currency", charge(func(r *paymentv1.CreatePaymentRequest) { r.Amount.CurrencyCode = "usd" }), []string{"amount.currency_code"}},
		{"charge without key", charge(func(r *paymentv1.CreatePaymentRequest) { r.IdempotencyKey = "" }), []string{"idempotency_key"}},
		{"charge without amount", charge(func(r *paymentv1.CreatePaymentRequest) { r.Amount = nil }), []string{"amount"}},
		{"full refund ok", &paymentv1.RefundPaymentRequest{PaymentId: id, IdempotencyKey: "r1"}, nil},
		{"negative refund", &paymentv1.RefundPaymentRequest{PaymentId: id, Amount: usd(-5), IdempotencyKey: "r1"}, []string{"amount"}},
		{"watch everything ok", &paymentv1.WatchPaymentsRequest{}, nil},
		{"watch bad order id", &paymentv1.WatchPaymentsRequest{OrderId: "x"}, []string{"order_id"}},

		{"order ok", order(nil), nil},
		{"order without items", order(func(r *orderv1.CreateOrderRequest) { r.Items = nil }), []string{"items"}},
		{"order zero quantity", order(func(r *orderv1.CreateOrderRequest) { r.Items[1].Quantity = 0 }), []string{"items[1].quantity"}},
		{"order without prices or currency", order(func(r *orderv1.CreateOrderRequest) {
			r.Items[0].UnitPriceMinor, r.Items[1].UnitPriceMinor, r.CurrencyCode = 0, 0, ""
		}), nil},
		{"order negative price", order(func(r *orderv1.CreateOrderRequest) { r.Items[0].UnitPriceMinor = -1 }), []string{"items[0].unit_price_minor"}},
		{"order repeated sku", order(func(r *orderv1.CreateOrderRequest) { r.Items[1].Sku = r.Items[0].Sku }), []string{"items"}},
		{"order bad currency", order(func(r *orderv1.CreateOrderRequest) { r.CurrencyCode = "DOLLARS" }), []string{"currency_code"}},
		{"order without token", order(func(r *orderv1.CreateOrderRequest) { r.PaymentMethodToken = "" }), []string{"payment_method_token"}},
		{"product ok", &orderv1.CreateProductRequest{Product: product(nil)}, nil},
		{"product bad sku", &orderv1.CreateProductRequest{Product: product(func(p *orderv1.Product) { p.Sku = "a b" })}, []string{"product.sku"}},
		{"product long name", &orderv1.CreateProductRequest{Product: product(func(p *orderv1.Product) { p.Name = strings.Repeat("x", 201) })}, []string{"product.name"}},
		{"product without name", &orderv1.CreateProductRequest{Product: product(func(p *orderv1.Product) { p.Name = "" })}, []string{"product"}},
		{"product without price", &orderv1.CreateProductRequest{Product: product(func(p *orderv1.Product) { p.Price = nil })}, []string{"product"}},
		{"product free", &orderv1.CreateProductRequest{Product: product(func(p *orderv1.Product) { p.Price.MinorUnits = 0 })}, []string{"product.price"}},
		{"product bad currency", &orderv1.CreateProductRequest{Product: product(func(p *orderv1.Product) { p.Price.CurrencyCode = "usd" })}, []string{"product.price.currency_code"}},
		{"product deactivation ok", &orderv1.UpdateProductRequest{Product: &orderv1.Product{Sku: "BOOK-1"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"active"}}}, nil},
		{"product update clears the name", &orderv1.UpdateProductRequest{Product: &orderv1.Product{Sku: "BOOK-1"},
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"name"}}}, []string{"update_product.name_cleared"}},
		{"product update of the sku", &orderv1.UpdateProductRequest{Product: product(nil),
			UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"sku"}}}, []string{"update_mask"}},
		{"product list ok", &orderv1.ListProductsRequest{IncludeInactive: true}, nil},
		{"track needs an action", &orderv1.TrackOrdersRequest{}, []string{"action"}},
		{"track subscribe ok", &orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: id}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := protovalidate.Validate(tt.msg)
			var verr *protovalidate.ValidationError
			if err != nil && !errors.As(err, &verr) {
				t.Fatalf("validate: %v", err)
			}
			var got []string
			if verr != nil {
				for _, v := range verr.Violations {
					if path := protovalidate.FieldPathString(v.Proto.GetField()); path != "" {
						got = append(got, path)
					} else {
						got = append(got, v.Proto.GetRuleId())
					}
				}
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) {
				t.Errorf("violations = %q, want %q (%v)", got, want, err)
			}
		})
	}
}

// TestRedaction checks that secrets are marked debug_redact, which the logging interceptor
// honours: passwords, access tokens and payment method tokens never reach a log line.
func TestRedaction(t *testing.T) {
	t.Parallel()
	secrets := map[protoreflect.FullName]bool{
		"meshmart.user.v1.CreateUserRequest.password":                   true,
		"meshmart.user.v1.LoginRequest.password":                        true,
		"meshmart.user.v1.LoginResponse.access_token":                   true,
		"meshmart.user.v1.LoginResponse.refresh_token":                  true,
		"meshmart.user.v1.RefreshTokenRequest.refresh_token":            true,
		"meshmart.user.v1.RefreshTokenResponse.access_token":            true,
		"meshmart.user.v1.RefreshTokenResponse.refresh_token":           true,
		"meshmart.user.v1.LogoutRequest.refresh_token":                  true,
		"meshmart.user.v1.ChangePasswordRequest.current_password":       true,
		"meshmart.user.v1.ChangePasswordRequest.new_password":           true,
		"meshmart.payment.v1.CreatePaymentRequest.payment_method_token": true,
		"meshmart.order.v1.CreateOrderRequest.payment_method_token":     true,
	}
	for name := range secrets {
		t.Run(string(name), func(t *testing.T) {
			t.Parallel()
			var fd protoreflect.FieldDescriptor
			for _, file := range []protoreflect.FileDescriptor{
				userv1.File_meshmart_user_v1_user_proto,
				paymentv1.File_meshmart_payment_v1_payment_proto,
				orderv1.File_meshmart_order_v1_order_proto,
			} {
				msg := file.Messages().ByName(name.Parent().Name())
				if msg != nil && file.Package() == name.Parent().Parent() {
					fd = msg.Fields().ByName(name.Name())
				}
			}
			if fd == nil {
				t.Fatalf("field %s not found", name)
			}
			if !fd.Options().(*descriptorpb.FieldOptions).GetDebugRedact() {
				t.Errorf("%s is not marked debug_redact", name)
			}
		})
	}
}
