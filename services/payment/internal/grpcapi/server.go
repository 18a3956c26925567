// Package grpcapi is the payment service's transport: it implements payment.v1.PaymentService by
// mapping protobuf messages to the domain and domain errors to gRPC statuses.
package grpcapi

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/meshmart/meshmart/pkg/feed"
	"github.com/meshmart/meshmart/pkg/grpcerr"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/paging"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

// Server implements payment.v1.PaymentService.
type Server struct {
	paymentv1.UnimplementedPaymentServiceServer
	svc  *payment.Service
	errs grpcerr.Mapper
	// events is the replica's one poller of the event log, shared by its WatchPayments streams.
	events *feed.Feed[payment.Event]
}

var _ paymentv1.PaymentServiceServer = (*Server)(nil)

// New returns the transport for svc; while watch streams are open, one feed polls the event log
// for all of them every watchInterval.
func New(svc *payment.Service, log *slog.Logger, watchInterval time.Duration) *Server {
	return &Server{svc: svc, errs: grpcerr.NewMapper(log, "the payment database"), events: svc.EventFeed(watchInterval, log)}
}

// CreatePayment implements payment.v1.PaymentService.
func (s *Server) CreatePayment(ctx context.Context, req *paymentv1.CreatePaymentRequest) (*paymentv1.CreatePaymentResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.svc.Charge(ctx, who, payment.ChargeInput{
		UserID:  req.GetUserId(),
		OrderID: req.GetOrderId(), Amount: money(req.GetAmount()), Token: req.GetPaymentMethodToken(), IdempotencyKey: req.GetIdempotencyKey(),
	})
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &paymentv1.CreatePaymentResponse{Payment: toProto(p)}, nil
}

// RefundPayment implements payment.v1.PaymentService.
func (s *Server) RefundPayment(ctx context.Context, req *paymentv1.RefundPaymentRequest) (*paymentv1.RefundPaymentResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	in := payment.RefundInput{PaymentID: req.GetPaymentId(), Reason: req.GetReason(), IdempotencyKey: req.GetIdempotencyKey()}
	if req.GetAmount() != nil {
		m := money(req.GetAmount())
		in.Amount = &m
	}
	p, r, err := s.svc.Refund(ctx, who, in)
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &paymentv1.RefundPaymentResponse{Payment: toProto(p), Refund: refundProto(r, p.Amount.Currency)}, nil
}

// GetPayment implements payment.v1.PaymentService.
func (s *Server) GetPayment(ctx context.Context, req *paymentv1.GetPaymentRequest) (*paymentv1.GetPaymentResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	p, err := s.svc.Get(ctx, who, req.GetId())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &paymentv1.GetPaymentResponse{Payment: toProto(p)}, nil
}

// ListPayments implements payment.v1.PaymentService.
func (s *Server) ListPayments(ctx context.Context, req *paymentv1.ListPaymentsRequest) (*paymentv1.ListPaymentsResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	f := payment.Filter{OrderID: req.GetOrderId(), UserID: req.GetUserId(), IdempotencyKey: req.GetIdempotencyKey()}
	ps, next, err := s.svc.List(ctx, who, f, int(req.GetPageSize()), req.GetPageToken())
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &paymentv1.ListPaymentsResponse{Payments: paging.Map(ps, toProto), NextPageToken: next}, nil
}

// WatchPayments implements payment.v1.PaymentService. It runs until the client cancels or the
// server shuts down (the chassis then ends the stream with Unavailable so the client reconnects).
func (s *Server) WatchPayments(req *paymentv1.WatchPaymentsRequest, stream grpc.ServerStreamingServer[paymentv1.WatchPaymentsResponse]) error {
	ctx := stream.Context()
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return err
	}
	err = s.svc.Watch(ctx, who, payment.Filter{OrderID: req.GetOrderId(), UserID: req.GetUserId()}, s.events, func(e payment.Event) error {
		return stream.Send(&paymentv1.WatchPaymentsResponse{Event: eventProto(e)})
	})
	if _, isStatus := status.FromError(err); isStatus {
		return err // nil, or a status from Send
	}
	return s.errs.Status(ctx, err)
}

// ListPaymentEvents implements payment.v1.PaymentService.
func (s *Server) ListPaymentEvents(ctx context.Context, req *paymentv1.ListPaymentEventsRequest) (*paymentv1.ListPaymentEventsResponse, error) {
	who, err := interceptors.Caller(ctx)
	if err != nil {
		return nil, err
	}
	events, err := s.svc.Events(ctx, who, req.GetAfterSeq(), int(req.GetPageSize()))
	if err != nil {
		return nil, s.errs.Status(ctx, err)
	}
	return &paymentv1.ListPaymentEventsResponse{Events: paging.Map(events, eventProto)}, nil
}

func eventProto(e payment.Event) *paymentv1.PaymentEvent {
	return &paymentv1.PaymentEvent{
		Id: e.ID, Type: paymentv1.PaymentEventType(e.Type), Amount: moneyProto(e.Amount),
		Payment: toProto(e.Payment), CreateTime: timestamppb.New(e.CreateTime), Seq: e.Seq,
	}
}

func money(m *moneyv1.Money) payment.Money {
	return payment.Money{Currency: m.GetCurrencyCode(), Minor: m.GetMinorUnits()}
}

func moneyProto(m payment.Money) *moneyv1.Money {
	return &moneyv1.Money{CurrencyCode: m.Currency, MinorUnits: m.Minor}
}

func toProto(p payment.Payment) *paymentv1.Payment {
	out := &paymentv1.Payment{
		Id: p.ID, OrderId: p.OrderID, UserId: p.UserID, Amount: moneyProto(p.Amount),
		RefundedAmount: moneyProto(payment.Money{Currency: p.Amount.Currency, Minor: p.RefundedMinor}),
		Status:         paymentv1.PaymentStatus(p.Status), DeclineReason: paymentv1.DeclineReason(p.DeclineReason),
		FailureMessage: p.FailureMessage, CreateTime: timestamppb.New(p.CreateTime), UpdateTime: timestamppb.New(p.UpdateTime),
	}
	for _, r := range p.Refunds {
		out.Refunds = append(out.Refunds, refundProto(r, p.Amount.Currency))
	}
	return out
}

func refundProto(r payment.Refund, currency string) *paymentv1.Refund {
	return &paymentv1.Refund{Id: r.ID, Amount: moneyProto(payment.Money{Currency: currency, Minor: r.AmountMinor}),
		Reason: r.Reason, CreateTime: timestamppb.New(r.CreateTime)}
}
