package grpcapi_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	"github.com/meshmart/meshmart/services/order/internal/grpcapi"
	"github.com/meshmart/meshmart/services/order/internal/order"
	"github.com/meshmart/meshmart/services/order/internal/store"
)

const (
	alice  = "00000000-0000-4000-8000-00000000a11c"
	bob    = "00000000-0000-4000-8000-000000000b0b"
	carol  = "00000000-0000-4000-8000-0000000ca201" // an inactive account
	nobody = "00000000-0000-4000-8000-999999999999"
)

// users is the user service: every account but carol's is active.
type users struct{}

func (users) Active(_ context.Context, userID string) (bool, error) { return userID != carol, nil }

// payments is the payment service: tok_approve captures, tok_down cannot be reached, anything
// else is declined. A payment is kept per order, so that cancelling refunds it.
type payments struct {
	mu      sync.Mutex
	byOrder map[string]order.Payment
}

func (p *payments) Charge(_ context.Context, req order.ChargeRequest) (order.Payment, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if req.Token == "tok_down" {
		return order.Payment{}, fmt.Errorf("charge: %w: rpc error: code = Unavailable desc = connection refused", order.ErrUnavailable)
	}
	if pay, ok := p.byOrder[req.OrderID]; ok {
		return pay, nil
	}
	pay := order.Payment{ID: "pay-" + req.OrderID, Status: order.PaymentCaptured}
	if req.Token != "tok_approve" {
		pay.Status, pay.Reason = order.PaymentDeclined, "card declined"
	}
	p.byOrder[req.OrderID] = pay
	return pay, nil
}

func (p *payments) Refund(context.Context, string, string, string) error { return nil }

func (p *payments) Get(_ context.Context, paymentID string) (order.Payment, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, pay := range p.byOrder {
		if pay.ID == paymentID {
			return pay, nil
		}
	}
	return order.Payment{}, fmt.Errorf("payment %s not found", paymentID)
}

func (p *payments) ByKey(_ context.Context, _, key string) (order.Payment, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pay, ok := p.byOrder[strings.TrimPrefix(key, "order:")]
	return pay, ok, nil
}

func (p *payments) EventsAfter(context.Context, int64, int) ([]order.PaymentEvent, error) {
	return nil, nil
}

// newClient runs the order service over bufconn behind the real chassis, on a fresh SQLite
// file with fake users and payments, and returns a client, contexts carrying alice's, bob's,
// carol's and an admin's tokens, and the store (to drive orders where no RPC can).
func newClient(t *testing.T, opts ...grpcapi.Option) (orderv1.OrderServiceClient, map[string]context.Context, *store.Orders) {
	t.Helper()
	cc, as, orders := newConn(t, opts...)
	return orderv1.NewOrderServiceClient(cc), as, orders
}

// newConn is newClient's connection, which serves the CatalogService too, seeded with
// testCatalog.
func newConn(t *testing.T, opts ...grpcapi.Option) (*grpc.ClientConn, map[string]context.Context, *store.Orders) {
	t.Helper()
	keys := testkit.NewKeys(t)
	orders := testkit.OpenSQLite(t, store.Open)
	svc := order.NewService(orders, users{}, &payments{byOrder: map[string]order.Payment{}}, time.Minute)
	catalog := order.NewCatalog(orders, orders.PageKey)
	if _, err := catalog.Seed(context.Background(), testCatalog()); err != nil {
		t.Fatal(err)
	}
	api := grpcapi.New(svc, testkit.Logger(t), 20*time.Millisecond, opts...)
	cc := testkit.BufconnService(t, "order", keys, &orderv1.OrderService_ServiceDesc, api,
		server.WithService(&orderv1.CatalogService_ServiceDesc, grpcapi.NewCatalog(catalog, testkit.Logger(t))))
	return cc, map[string]context.Context{
		"alice": keys.Context(t, alice, auth.RoleUser), "bob": keys.Context(t, bob, auth.RoleUser),
		"carol": keys.Context(t, carol, auth.RoleUser), "admin": keys.Context(t, "00000000-0000-4000-8000-0000000ad111", auth.RoleAdmin),
	}, orders
}

// testCatalog is the catalog of every test server.
func testCatalog() []order.Product {
	return []order.Product{
		{SKU: "BOOK-1", Name: "Book", Currency: "USD", PriceMinor: 1999, Active: true},
		{SKU: "PEN-7", Name: "Pen", Currency: "USD", PriceMinor: 250, Active: true},
		{SKU: "OLD-LAMP", Name: "Lamp", Currency: "USD", PriceMinor: 3500},
	}
}

func orderReq(token, key string) *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		Items:              []*orderv1.LineItem{{Sku: "BOOK-1", Quantity: 2}, {Sku: "PEN-7", Quantity: 3}},
		PaymentMethodToken: token, IdempotencyKey: key,
	}
}

func code(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("got %v, want %v", err, want)
	}
}

// create places an order that must succeed.
func create(t *testing.T, c orderv1.OrderServiceClient, ctx context.Context, token, key string) *orderv1.Order {
	t.Helper()
	resp, err := c.CreateOrder(ctx, orderReq(token, key))
	if err != nil {
		t.Fatalf("CreateOrder(%s, %s) = %v", token, key, err)
	}
	return resp.GetOrder()
}

func TestCreateOrder(t *testing.T) {
	t.Parallel()
	c, as, _ := newClient(t)
	paid := create(t, c, as["alice"], "tok_approve", "k1")
	if paid.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID || paid.GetTotal().GetMinorUnits() != 2*1999+3*250 ||
		paid.GetTotal().GetCurrencyCode() != "USD" || paid.GetUserId() != alice || paid.GetPaymentId() == "" ||
		len(paid.GetItems()) != 2 || paid.GetCreateTime() == nil || paid.GetRevision() != 2 {
		t.Fatalf("order = %v", paid)
	}
	if again := create(t, c, as["alice"], "tok_approve", "k1"); again.GetId() != paid.GetId() {
		t.Errorf("repeat = %v, want order %s", again, paid.GetId())
	}
	declined := create(t, c, as["alice"], "tok_decline", "k2")
	if declined.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAYMENT_FAILED || declined.GetPaymentFailureReason() != "card declined" {
		t.Errorf("declined = %v", declined)
	}

	reused := orderReq("tok_approve", "k1")
	reused.Items[0].Quantity = 5
	tests := []struct {
		name string
		ctx  context.Context
		req  *orderv1.CreateOrderRequest
		want codes.Code
	}{
		{"no token", context.Background(), orderReq("tok_approve", "k3"), codes.Unauthenticated},
		{"bad currency", as["alice"], func() *orderv1.CreateOrderRequest {
			r := orderReq("tok_approve", "k3")
			r.CurrencyCode = "usd"
			return r
		}(), codes.InvalidArgument},
		{"no items", as["alice"], func() *orderv1.CreateOrderRequest { r := orderReq("tok_approve", "k3"); r.Items = nil; return r }(), codes.InvalidArgument},
		{"no idempotency key", as["alice"], orderReq("tok_approve", ""), codes.InvalidArgument},
		{"key reused", as["alice"], reused, codes.FailedPrecondition},
		{"inactive user", as["carol"], orderReq("tok_approve", "k3"), codes.FailedPrecondition},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateOrder(tt.ctx, tt.req)
			code(t, err, tt.want)
		})
	}
}

// An order whose payment cannot be settled now is kept: Unavailable names it in a PAYMENT_PENDING
// ErrorInfo, and it can be read.
func TestCreateOrderPaymentPending(t *testing.T) {
	t.Parallel()
	c, as, _ := newClient(t)
	_, err := c.CreateOrder(as["alice"], orderReq("tok_down", "k1"))
	code(t, err, codes.Unavailable)
	var id string
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == "PAYMENT_PENDING" && info.GetDomain() == "order.meshmart" {
			id = info.GetMetadata()["order_id"]
		}
	}
	if id == "" {
		t.Fatalf("no PAYMENT_PENDING ErrorInfo with an order_id in %v", err)
	}
	got, err := c.GetOrder(as["alice"], &orderv1.GetOrderRequest{Id: id})
	if err != nil || got.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PENDING {
		t.Errorf("the pending order = %v, %v", got, err)
	}
}

func TestGetOrder(t *testing.T) {
	t.Parallel()
	c, as, _ := newClient(t)
	o := create(t, c, as["alice"], "tok_approve", "k1")
	for who, want := range map[string]codes.Code{"alice": codes.OK, "admin": codes.OK, "bob": codes.PermissionDenied} {
		got, err := c.GetOrder(as[who], &orderv1.GetOrderRequest{Id: o.GetId()})
		code(t, err, want)
		if err == nil && got.GetOrder().GetId() != o.GetId() {
			t.Errorf("%s got %v", who, got)
		}
	}
	_, err := c.GetOrder(context.Background(), &orderv1.GetOrderRequest{Id: o.GetId()})
	code(t, err, codes.Unauthenticated)
	_, err = c.GetOrder(as["alice"], &orderv1.GetOrderRequest{Id: "not-a-uuid"})
	code(t, err, codes.InvalidArgument)
	_, err = c.GetOrder(as["alice"], &orderv1.GetOrderRequest{Id: nobody})
	code(t, err, codes.NotFound)
}

func TestCancelOrder(t *testing.T) {
	t.Parallel()
	c, as, orders := newClient(t)
	o := create(t, c, as["alice"], "tok_approve", "k1")
	cancel := func(who, id string) (*orderv1.Order, error) {
		resp, err := c.CancelOrder(as[who], &orderv1.CancelOrderRequest{Id: id, Reason: "changed my mind"})
		return resp.GetOrder(), err
	}
	_, err := cancel("bob", o.GetId())
	code(t, err, codes.PermissionDenied)
	_, err = cancel("alice", nobody)
	code(t, err, codes.NotFound)
	_, err = cancel("alice", "not-a-uuid")
	code(t, err, codes.InvalidArgument)
	_, err = c.CancelOrder(context.Background(), &orderv1.CancelOrderRequest{Id: o.GetId()})
	code(t, err, codes.Unauthenticated)
	cancelled, err := cancel("alice", o.GetId())
	if err != nil || cancelled.GetStatus() != orderv1.OrderStatus_ORDER_STATUS_CANCELLED {
		t.Fatalf("CancelOrder = %v, %v", cancelled, err)
	}
	again, err := cancel("alice", o.GetId())
	if err != nil || again.GetRevision() != cancelled.GetRevision() {
		t.Errorf("cancelling twice = %v, %v", again, err)
	}

	// A shipped order (driven in the store: no RPC ships yet) cannot be cancelled.
	paid := create(t, c, as["alice"], "tok_approve", "k2")
	stored, err := orders.Get(context.Background(), paid.GetId())
	if err != nil {
		t.Fatal(err)
	}
	shipped := stored
	shipped.Status, shipped.Revision = order.StatusShipped, stored.Revision+1
	if err := orders.Transition(context.Background(), shipped, stored.Status); err != nil {
		t.Fatal(err)
	}
	_, err = cancel("admin", paid.GetId())
	code(t, err, codes.FailedPrecondition)
}

func TestListOrders(t *testing.T) {
	t.Parallel()
	c, as, _ := newClient(t)
	for i := range 3 {
		create(t, c, as["alice"], "tok_approve", fmt.Sprint("a", i))
	}
	create(t, c, as["alice"], "tok_decline", "declined")
	create(t, c, as["bob"], "tok_approve", "b")

	list := func(who string, req *orderv1.ListOrdersRequest) ([]*orderv1.Order, error) {
		var all []*orderv1.Order
		for pages := 0; ; pages++ {
			resp, err := c.ListOrders(as[who], req)
			if err != nil {
				return nil, err
			}
			if len(resp.GetOrders()) > int(req.GetPageSize()) && req.GetPageSize() > 0 {
				t.Fatalf("a page of %d, want at most %d", len(resp.GetOrders()), req.GetPageSize())
			}
			all = append(all, resp.GetOrders()...)
			if resp.GetNextPageToken() == "" || pages > 10 {
				return all, nil
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	all, err := list("alice", &orderv1.ListOrdersRequest{PageSize: 2})
	if err != nil || len(all) != 4 {
		t.Fatalf("alice listed %d (%v), want 4", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i-1].GetCreateTime().AsTime().Before(all[i].GetCreateTime().AsTime()) {
			t.Errorf("not newest first: %v before %v", all[i-1].GetCreateTime(), all[i].GetCreateTime())
		}
	}
	paid, err := list("alice", &orderv1.ListOrdersRequest{PageSize: 2, Status: orderv1.OrderStatus_ORDER_STATUS_PAID})
	if err != nil || len(paid) != 3 {
		t.Errorf("alice's PAID orders = %d (%v), want 3", len(paid), err)
	}
	everyone, err := list("admin", &orderv1.ListOrdersRequest{PageSize: 2})
	if err != nil || len(everyone) != 5 {
		t.Errorf("admin listed %d (%v), want 5", len(everyone), err)
	}

	first, err := c.ListOrders(as["alice"], &orderv1.ListOrdersRequest{PageSize: 2})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("first page = %v, %v", first, err)
	}
	tests := []struct {
		name string
		who  string
		req  *orderv1.ListOrdersRequest
		want codes.Code
	}{
		{"garbage token", "alice", &orderv1.ListOrdersRequest{PageToken: "garbage"}, codes.InvalidArgument},
		{"token of another filter", "alice", &orderv1.ListOrdersRequest{PageToken: first.GetNextPageToken(), Status: orderv1.OrderStatus_ORDER_STATUS_PAID}, codes.InvalidArgument},
		{"negative page size", "alice", &orderv1.ListOrdersRequest{PageSize: -1}, codes.InvalidArgument},
		{"another user's orders", "alice", &orderv1.ListOrdersRequest{UserId: bob}, codes.PermissionDenied},
		{"no token", "", &orderv1.ListOrdersRequest{}, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := as[tt.who]
			if ctx == nil {
				ctx = context.Background()
			}
			_, err := c.ListOrders(ctx, tt.req)
			code(t, err, tt.want)
		})
	}
}

func TestTrackOrders(t *testing.T) {
	t.Parallel()
	c, as, _ := newClient(t)
	o := create(t, c, as["alice"], "tok_approve", "k1")
	ctx, cancel := context.WithTimeout(as["alice"], 10*time.Second)
	defer cancel()
	stream, err := c.TrackOrders(ctx)
	if err != nil {
		t.Fatal(err)
	}
	recv := func() *orderv1.OrderUpdate {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetUpdate()
	}
	if err := stream.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: o.GetId()}}); err != nil {
		t.Fatal(err)
	}
	if u := recv(); u.GetType() != orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_SUBSCRIBED || u.GetOrder().GetStatus() != orderv1.OrderStatus_ORDER_STATUS_PAID {
		t.Fatalf("subscription = %v", u)
	}
	if _, err := c.CancelOrder(as["alice"], &orderv1.CancelOrderRequest{Id: o.GetId()}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []orderv1.OrderStatus{orderv1.OrderStatus_ORDER_STATUS_CANCELLING, orderv1.OrderStatus_ORDER_STATUS_CANCELLED} {
		if u := recv(); u.GetType() != orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_STATUS_CHANGED || u.GetOrder().GetStatus() != want || u.GetOrder().GetId() != o.GetId() {
			t.Fatalf("update = %v, want STATUS_CHANGED to %v", u, want)
		}
	}
	if err := stream.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_UnsubscribeOrderId{UnsubscribeOrderId: o.GetId()}}); err != nil {
		t.Fatal(err)
	}
	if u := recv(); u.GetType() != orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_UNSUBSCRIBED || u.GetOrder().GetId() != o.GetId() {
		t.Fatalf("unsubscription = %v", u)
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("after cancel: %v", err)
	}

	// Subscribing to someone else's order ends the stream with PermissionDenied; no token, with
	// Unauthenticated.
	for who, want := range map[string]codes.Code{"bob": codes.PermissionDenied, "": codes.Unauthenticated} {
		ctx := as[who]
		if ctx == nil {
			ctx = context.Background()
		}
		other, err := c.TrackOrders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = other.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: o.GetId()}})
		_, err = other.Recv()
		code(t, err, want)
	}
}

// limitOf returns the limit a ResourceExhausted status names (its ErrorInfo's "limit"), and
// whether it says when to retry.
func limitOf(err error) (limit string, retry bool) {
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			limit = d.GetMetadata()["limit"]
		case *errdetails.RetryInfo:
			retry = d.GetRetryDelay().AsDuration() > 0
		}
	}
	return limit, retry
}

// A stream may track so many orders, and change its subscriptions so often; past either it ends
// with ResourceExhausted naming the limit (and, for the rate, when to retry).
func TestTrackOrdersLimits(t *testing.T) {
	t.Parallel()
	subscribe := func(stream orderv1.OrderService_TrackOrdersClient, id string) error {
		if err := stream.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: id}}); err != nil {
			return err
		}
		_, err := stream.Recv()
		return err
	}
	t.Run("orders per stream", func(t *testing.T) {
		t.Parallel()
		c, as, _ := newClient(t, grpcapi.WithTrackLimits(grpcapi.TrackLimits{MaxOrders: 2, Rate: 1000, Burst: 1000}))
		var ids []string
		for i := range 3 {
			ids = append(ids, create(t, c, as["alice"], "tok_approve", fmt.Sprint("k", i)).GetId())
		}
		stream, err := c.TrackOrders(as["alice"])
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{ids[0], ids[1], ids[1]} { // the same order twice counts once
			if err := subscribe(stream, id); err != nil {
				t.Fatal(err)
			}
		}
		err = subscribe(stream, ids[2])
		code(t, err, codes.ResourceExhausted)
		if limit, _ := limitOf(err); limit != "track_orders_per_stream" {
			t.Errorf("limit named %q, want track_orders_per_stream (%v)", limit, err)
		}
	})
	t.Run("messages per second", func(t *testing.T) {
		t.Parallel()
		c, as, _ := newClient(t, grpcapi.WithTrackLimits(grpcapi.TrackLimits{Rate: 0.01, Burst: 3}))
		id := create(t, c, as["alice"], "tok_approve", "k").GetId()
		stream, err := c.TrackOrders(as["alice"])
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if err := subscribe(stream, id); err != nil {
				t.Fatal(err)
			}
		}
		err = subscribe(stream, id)
		code(t, err, codes.ResourceExhausted)
		if limit, retry := limitOf(err); limit != "track_messages_per_second" || !retry {
			t.Errorf("limit named %q (retry info: %v), want track_messages_per_second with a retry delay (%v)", limit, retry, err)
		}
	})
}
