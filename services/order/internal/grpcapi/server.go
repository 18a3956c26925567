// Package grpcapi is the order service's transport: it implements order.v1.OrderService by
// mapping protobuf messages to the domain and domain errors to gRPC statuses.
package grpcapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshmart/meshmart/pkg/grpcerr"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/paging"
	"github.com/meshmart/meshmart/pkg/poll"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

// Server implements order.v1.OrderService.
type Server struct {
	orderv1.UnimplementedOrderServiceServer
	svc  *order.Service
	errs grpcerr.Mapper
	// trackInterval is how often a TrackOrders stream looks for updates.
	trackInterval time.Duration
}

var _ orderv1.OrderServiceServer = (*Server)(nil)

// New returns the transport for svc; tracking streams poll for updates every trackInterval.
func New(svc *order.Service, log *slog.Logger, trackInterval time.Duration) *Server {
	return &Server{svc: svc, errs: grpcerr.NewMapper(log, "the order database"), trackInterval: trackInterval}
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
// until the client closes its side; this one answers them and, every trackInterval, pushes the
// subscribed orders' new updates from the shared log, whichever replica wrote them, each once and
// in order (an update is sent only when its revision is above the last one sent for that order).
func (s *Server) TrackOrders(stream grpc.BidiStreamingServer[orderv1.TrackOrdersRequest, orderv1.TrackOrdersResponse]) error {
	ctx := stream.Context()
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return err
	}
	requests := make(chan *orderv1.TrackOrdersRequest)
	recvErr := make(chan error, 1)
	go func() {
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
	seq, err := s.svc.LastUpdateSeq(ctx)
	if err != nil {
		return s.errs.Status(ctx, err)
	}
	sent := map[string]int64{} // subscribed order id -> revision last sent
	send := func(t orderv1.OrderUpdateType, o order.Order, previous order.Status) error {
		return stream.Send(&orderv1.TrackOrdersResponse{Update: &orderv1.OrderUpdate{
			Type: t, Order: toProto(o), PreviousStatus: orderv1.OrderStatus(previous)}})
	}
	ticker := time.NewTicker(s.trackInterval)
	defer ticker.Stop()
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
			if id := req.GetSubscribeOrderId(); id != "" {
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
		case <-ticker.C:
			ids := make([]string, 0, len(sent))
			for id := range sent {
				ids = append(ids, id)
			}
			fetch := func(ctx context.Context, after int64, limit int) ([]order.Update, error) {
				return s.svc.UpdatesAfter(ctx, ids, after, limit)
			}
			var sendErr error
			seq, err = poll.Drain(ctx, seq, 100, fetch, func(u order.Update) int64 { return u.Seq }, func(u order.Update) error {
				last, subscribed := sent[u.Order.ID]
				if !subscribed || u.Order.Revision <= last {
					return nil
				}
				sent[u.Order.ID] = u.Order.Revision
				sendErr = send(orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_STATUS_CHANGED, u.Order, u.PreviousStatus)
				return sendErr
			})
			if sendErr != nil {
				return sendErr
			}
			if err != nil {
				return s.errs.Status(ctx, err)
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
