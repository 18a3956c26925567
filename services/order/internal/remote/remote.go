// Package remote implements the order service's view of the user and payment services
// (order.Users and order.Payments) with gRPC clients built on the chassis.
//
// A call made while serving a user carries that user's token (the chassis client forwards it).
// Work the order service does on its own (the reconciler, refunds it finishes) carries no token:
// the service acts as itself, proved by its certificate over mutual TLS, and names the user it
// acts for in the request.
package remote

import (
	"context"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

func toPayment(p *paymentv1.Payment) order.Payment {
	out := order.Payment{ID: p.GetId()}
	switch p.GetStatus() {
	case paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED:
		out.Status = order.PaymentCaptured
	case paymentv1.PaymentStatus_PAYMENT_STATUS_PARTIALLY_REFUNDED, paymentv1.PaymentStatus_PAYMENT_STATUS_REFUNDED:
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

// Refund implements order.Payments. A payment with nothing left to refund counts as refunded.
func (p *Payments) Refund(ctx context.Context, paymentID, _ string, key, reason string) error {
	_, err := p.client.RefundPayment(ctx, &paymentv1.RefundPaymentRequest{PaymentId: paymentID, IdempotencyKey: key, Reason: reason})
	if status.Code(err) == codes.FailedPrecondition {
		return nil // already refunded in full, or never captured: nothing is owed back
	}
	if err != nil {
		return wrap("refund the order", err)
	}
	return nil
}

// ForOrder implements order.Payments.
func (p *Payments) ForOrder(ctx context.Context, orderID, userID string) (order.Payment, bool, error) {
	resp, err := p.client.ListPayments(ctx, &paymentv1.ListPaymentsRequest{OrderId: orderID, UserId: userID, PageSize: 1})
	if err != nil {
		return order.Payment{}, false, wrap("find the order's payment", err)
	}
	if len(resp.GetPayments()) == 0 {
		return order.Payment{}, false, nil
	}
	return toPayment(resp.GetPayments()[0]), true, nil
}
