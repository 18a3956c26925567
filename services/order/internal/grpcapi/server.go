// Package grpcapi is the order service's transport: it implements order.v1.OrderService by
// mapping protobuf messages to the domain and domain errors to gRPC statuses.
package grpcapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshmart/meshmart/pkg/feed"
	"github.com/meshmart/meshmart/pkg/grpcerr"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/server"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

// Server implements order.v1.OrderService.
type Server struct {
	orderv1.UnimplementedOrderServiceServer
	svc  *order.Service
	log  *slog.Logger
	errs grpcerr.Mapper
	// updates is the replica's one poller of the update log, shared by its TrackOrders streams.
	updates *feed.Feed[order.Update]
	track   TrackLimits
}

var _ orderv1.OrderServiceServer = (*Server)(nil)

// TrackLimits bound what one TrackOrders stream may ask for.
type TrackLimits struct {
	// MaxOrders is the most orders one stream may be subscribed to at once; a subscription over
	// it fails the stream with ResourceExhausted naming "track_orders_per_stream". Default 100.
	MaxOrders int
	// Rate is the subscription messages (subscribe and unsubscribe) one stream may send per
	// second, Burst the burst above it; a message over them fails the stream with
	// ResourceExhausted naming "track_messages_per_second", with the delay to retry after.
	// Defaults 10 and 20.
	Rate  float64
	Burst int
}

// Option configures New.
type Option func(*Server)

// WithTrackLimits sets the limits of TrackOrders streams; zero fields keep their defaults.
func WithTrackLimits(l TrackLimits) Option {
	return func(s *Server) {
		if l.MaxOrders > 0 {
			s.track.MaxOrders = l.MaxOrders
		}
		if l.Rate > 0 {
			s.track.Rate = l.Rate
		}
		if l.Burst > 0 {
			s.track.Burst = l.Burst
		}
	}
}

// New returns the transport for svc; while tracking streams are open, one feed polls the update
// log for all of them every trackInterval.
func New(svc *order.Service, log *slog.Logger, trackInterval time.Duration, opts ...Option) *Server {
	s := &Server{svc: svc, log: log, errs: grpcerr.NewMapper(log, "the order database"), updates: svc.Updates(trackInterval, log),
		track: TrackLimits{MaxOrders: 100, Rate: 10, Burst: 20}}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// CreateOrder implements order.v1.OrderService.
func (s *Server) CreateOrder(ctx context.Context, req *orderv1.CreateOrderRequest) (*orderv1.CreateOrderResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	in := order.CreateInput{Currency: req.GetCurrencyCode(), Token: req.GetPaymentMethodToken(), IdempotencyKey: req.GetIdempotencyKey()}
	for _, it := range req.GetItems() {
		in.Items = append(in.Items, order.Item{SKU: it.GetSku(), Quantity: int64(it.GetQuantity()), UnitPriceMinor: it.GetUnitPriceMinor()})
	}
	o, err := s.svc.Create(ctx, who, in)
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &orderv1.CreateOrderResponse{Order: toProto(o)}, nil
}

// GetOrder implements order.v1.OrderService.
func (s *Server) GetOrder(ctx context.Context, req *orderv1.GetOrderRequest) (*orderv1.GetOrderResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	o, err := s.svc.Get(ctx, who, req.GetId())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &orderv1.GetOrderResponse{Order: toProto(o)}, nil
}

// ListOrders implements order.v1.OrderService.
func (s *Server) ListOrders(ctx context.Context, req *orderv1.ListOrdersRequest) (*orderv1.ListOrdersResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	f := order.Filter{UserID: req.GetUserId(), Status: order.Status(req.GetStatus())}
	os, next, err := s.svc.List(ctx, who, f, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &orderv1.ListOrdersResponse{Orders: paging.Map(os, toProto), NextPageToken: next}, nil
}

// CancelOrder implements order.v1.OrderService.
func (s *Server) CancelOrder(ctx context.Context, req *orderv1.CancelOrderRequest) (*orderv1.CancelOrderResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	o, err := s.svc.Cancel(ctx, who, req.GetId(), req.GetReason())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &orderv1.CancelOrderResponse{Order: toProto(o)}, nil
}

// TrackOrders implements order.v1.OrderService. One goroutine reads the client's subscriptions
// until the client closes its side; this one answers them and pushes the subscribed orders' new
// updates from the replica's feed of the shared log, whichever replica wrote them, each once and
// in order (an update is sent only when its revision is above the last one sent for that order).
// A stream may hold TrackLimits.MaxOrders subscriptions and send TrackLimits.Rate messages a
// second; past either it ends with ResourceExhausted naming the limit.
func (s *Server) TrackOrders(stream grpc.BidiStreamingServer[orderv1.TrackOrdersRequest, orderv1.TrackOrdersResponse]) error {
	ctx := stream.Context()
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return err
	}
	// The reader and this loop both end when the handler returns (the stream's context ends).
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	requests := make(chan *orderv1.TrackOrdersRequest)
	recvErr := make(chan error, 1)
	go func() {
		defer observability.Recover(s.log, "TrackOrders reader")
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case requests <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	sub, err := s.updates.Subscribe(ctx)
	if err != nil {
		return s.errs.Status(ctx, err)
	}
	defer sub.Close()
	limiter := rate.NewLimiter(rate.Limit(s.track.Rate), s.track.Burst)
	sent := map[string]int64{} // subscribed order id -> revision last sent
	send := func(t orderv1.OrderUpdateType, o order.Order, previous order.Status) error {
		return stream.Send(&orderv1.TrackOrdersResponse{Update: &orderv1.OrderUpdate{
			Type: t, Order: toProto(o), PreviousStatus: orderv1.OrderStatus(previous)}})
	}
	receiving := (<-chan error)(recvErr)
	for {
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case err := <-receiving:
			if !errors.Is(err, io.EOF) {
				return err
			}
			// The client closed its side: no more subscription changes, but the updates of
			// what it subscribed to keep coming until it cancels (as grpcurl -d expects).
			receiving = nil
		case req := <-requests:
			if r := limiter.Reserve(); r.Delay() > 0 {
				return server.Exhausted("track_messages_per_second", s.track.Burst, fmt.Sprintf(
					"too many subscription changes: at most %g a second on one stream, bursts of %d", s.track.Rate, s.track.Burst), r.Delay())
			}
			if id := req.GetSubscribeOrderId(); id != "" {
				if _, already := sent[id]; !already && len(sent) >= s.track.MaxOrders {
					return server.Exhausted("track_orders_per_stream", s.track.MaxOrders, fmt.Sprintf(
						"too many orders tracked: at most %d on one stream; unsubscribe from one first", s.track.MaxOrders), 0)
				}
				o, err := s.svc.Get(ctx, who, id)
				if err != nil {
					return s.errs.Status(ctx, err)
				}
				sent[id] = o.Revision
				if err := send(orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_SUBSCRIBED, o, order.StatusUnspecified); err != nil {
					return err
				}
			} else if id := req.GetUnsubscribeOrderId(); id != "" {
				delete(sent, id)
				if err := send(orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_UNSUBSCRIBED, order.Order{ID: id}, order.StatusUnspecified); err != nil {
					return err
				}
			}
		case <-sub.Done():
			return s.errs.Status(ctx, sub.Err())
		case batch := <-sub.Batches():
			for _, u := range batch {
				last, subscribed := sent[u.Order.ID]
				if !subscribed || u.Order.Revision <= last {
					continue
				}
				sent[u.Order.ID] = u.Order.Revision
				if err := send(orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_STATUS_CHANGED, u.Order, u.PreviousStatus); err != nil {
					return err
				}
			}
		}
	}
}

func toProto(o order.Order) *orderv1.Order {
	p := &orderv1.Order{
		Id: o.ID, UserId: o.UserID, Status: orderv1.OrderStatus(o.Status), PaymentId: o.PaymentID,
		PaymentFailureReason: o.FailureReason, Revision: o.Revision,
	}
	if o.Currency != "" {
		p.Total = &moneyv1.Money{CurrencyCode: o.Currency, MinorUnits: o.TotalMinor}
	}
	if !o.CreateTime.IsZero() {
		p.CreateTime, p.UpdateTime = timestamppb.New(o.CreateTime), timestamppb.New(o.UpdateTime)
	}
	for _, it := range o.Items {
		p.Items = append(p.Items, &orderv1.LineItem{Sku: it.SKU, Quantity: int32(it.Quantity), UnitPriceMinor: it.UnitPriceMinor})
	}
	return p
}
