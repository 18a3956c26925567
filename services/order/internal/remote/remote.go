// Package remote implements the order service's view of the user and payment services
// (order.Users and order.Payments) with gRPC clients built on the chassis.
//
// A charge made while serving a user carries that user's token (the chassis client forwards it).
// Work the order service does on its own (the reconciler) carries no token, and neither do
// refunds, payment look-ups and the payment event feed, whoever the order service serves at the
// time: those are the order service's own business (RefundPayment admits only it and admins), so
// it makes them as itself, proved by its certificate over mutual TLS (asService), and names the
// user it acts for in the request.
package remote

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

// wrap turns an error of the user or payment service into one of the order service: the
// downstream error, whose text is not for the order service's client, is only the cause (logged,
// never sent). Codes that mean "could not reach or hear from the service" become
// order.ErrUnavailable, so the client may retry; the rest are the order service's own failure,
// Internal.
func wrap(what string, err error) error {
	cause := fmt.Errorf("%s: %w", what, err)
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Canceled, codes.Aborted:
		return order.ErrUnavailable.Wrap(cause)
	}
	return cause
}

// Users implements order.Users.
type Users struct{ client userv1.UserServiceClient }

// NewUsers returns order.Users backed by the user service.
func NewUsers(client userv1.UserServiceClient) *Users { return &Users{client: client} }

// Active implements order.Users, with the caller's own token.
func (u *Users) Active(ctx context.Context, userID string) (bool, error) {
	resp, err := u.client.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: userID}})
	switch status.Code(err) {
	case codes.OK:
		return resp.GetUser().GetStatus() == userv1.UserStatus_USER_STATUS_ACTIVE, nil
	case codes.NotFound:
		return false, nil
	}
	return false, wrap("check the user", err)
}

// Payments implements order.Payments.
type Payments struct {
	client paymentv1.PaymentServiceClient
}

// NewPayments returns order.Payments backed by the payment service.
func NewPayments(client paymentv1.PaymentServiceClient) *Payments { return &Payments{client: client} }

// asService returns ctx without the identity of the user being served, so that the chassis
// client forwards no token and the call is the order service's alone (its certificate).
func asService(ctx context.Context) context.Context { return auth.NewContext(ctx, auth.Identity{}) }

func toPayment(p *paymentv1.Payment) order.Payment {
	out := order.Payment{ID: p.GetId(), OrderID: p.GetOrderId()}
	switch p.GetStatus() {
	case paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED:
		out.Status = order.PaymentCaptured
	case paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED:
		out.Status = order.PaymentPartiallyRefunded
	case paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED:
		out.Status = order.PaymentRefunded
	case paymentv1.PaymentStatus_PAYMENT_STATUS_DECLINED, paymentv1.PaymentStatus_PAYMENT_STATUS_FAILED:
		out.Status, out.Reason = order.PaymentDeclined, p.GetFailureMessage()
		if out.Reason == "" {
			out.Reason = p.GetDeclineReason().String()
		}
	default:
		out.Status = order.PaymentPending
	}
	return out
}

// Charge implements order.Payments.
func (p *Payments) Charge(ctx context.Context, req order.ChargeRequest) (order.Payment, error) {
	resp, err := p.client.CreatePayment(ctx, &paymentv1.CreatePaymentRequest{
		OrderId: req.OrderID, UserId: req.UserID, PaymentMethodToken: req.Token, IdempotencyKey: req.IdempotencyKey,
		Amount: &moneyv1.Money{CurrencyCode: req.Currency, MinorUnits: req.AmountMinor},
	})
	if err != nil {
		return order.Payment{}, wrap("charge the order", err)
	}
	return toPayment(resp.GetPayment()), nil
}

// Refund implements order.Payments, as the order service. A payment with nothing left to refund
// counts as refunded; so does a key already used (keys are the order service's own, so only by
// its earlier refund of the same order).
func (p *Payments) Refund(ctx context.Context, paymentID, key, reason string) error {
	_, err := p.client.RefundPayment(asService(ctx), &paymentv1.RefundPaymentRequest{PaymentId: paymentID, IdempotencyKey: key, Reason: reason})
	if status.Code(err) == codes.FailedPrecondition {
		return nil // already refunded in full, or never captured: nothing is owed back
	}
	if err != nil {
		return wrap("refund the order", err)
	}
	return nil
}

// Get implements order.Payments, as the order service.
func (p *Payments) Get(ctx context.Context, paymentID string) (order.Payment, error) {
	resp, err := p.client.GetPayment(asService(ctx), &paymentv1.GetPaymentRequest{Id: paymentID})
	if err != nil {
		return order.Payment{}, wrap("read the order's payment", err)
	}
	return toPayment(resp.GetPayment()), nil
}

// ByKey implements order.Payments, as the order service: the payment service matches the key in
// the order service's own namespace.
func (p *Payments) ByKey(ctx context.Context, userID, key string) (order.Payment, bool, error) {
	resp, err := p.client.ListPayments(asService(ctx), &paymentv1.ListPaymentsRequest{UserId: userID, IdempotencyKey: key, PageSize: 1})
	if err != nil {
		return order.Payment{}, false, wrap("find the order's payment", err)
	}
	if len(resp.GetPayments()) == 0 {
		return order.Payment{}, false, nil
	}
	return toPayment(resp.GetPayments()[0]), true, nil
}

// EventsAfter implements order.Payments, as the order service.
func (p *Payments) EventsAfter(ctx context.Context, seq int64, limit int) ([]order.PaymentEvent, error) {
	resp, err := p.client.ListPaymentEvents(asService(ctx), &paymentv1.ListPaymentEventsRequest{AfterSeq: seq, PageSize: int32(limit)})
	if err != nil {
		return nil, wrap("read the payment events", err)
	}
	out := make([]order.PaymentEvent, len(resp.GetEvents()))
	for i, e := range resp.GetEvents() {
		out[i] = order.PaymentEvent{Seq: e.GetSeq(), Payment: toPayment(e.GetPayment())}
	}
	return out, nil
}
