// Package remote implements the order service's view of the user and payment services
// (order.Users and order.Payments) with gRPC clients built on the chassis, and the service
// account the order service uses for the work it does on its own, with no user's call to carry a
// token.
package remote

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/order/internal/order"
)

// ServiceAccount logs the order service in to the user service as an account of its own and
// keeps its token fresh. The account must be an admin (its email listed in the user service's
// MESHMART_ADMIN_EMAILS) to settle payments on behalf of users; it is signed up on first use.
type ServiceAccount struct {
	users                     userv1.UserServiceClient
	email, username, password string

	mu     sync.Mutex
	token  string
	expiry time.Time
}

// NewServiceAccount returns the service account with the given credentials.
func NewServiceAccount(users userv1.UserServiceClient, email, username, password string) *ServiceAccount {
	return &ServiceAccount{users: users, email: email, username: username, password: password}
}

// Token returns a token with at least a minute left, logging in (and signing up) as needed.
func (a *ServiceAccount) Token(ctx context.Context) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.token != "" && time.Until(a.expiry) > time.Minute {
		return a.token, nil
	}
	login := func() (*userv1.LoginResponse, error) {
		return a.users.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Email{Email: a.email}, Password: a.password})
	}
	resp, err := login()
	if status.Code(err) == codes.Unauthenticated {
		_, cerr := a.users.CreateUser(ctx, &userv1.CreateUserRequest{Email: a.email, Username: a.username, Password: a.password, GivenName: "Order service"})
		if cerr != nil && status.Code(cerr) != codes.AlreadyExists {
			return "", wrap("sign the service account up", cerr)
		}
		resp, err = login()
	}
	if err != nil {
		return "", wrap("log the service account in", err)
	}
	a.token, a.expiry = resp.GetAccessToken(), resp.GetExpireTime().AsTime()
	return a.token, nil
}

// authorize returns ctx ready for an outgoing call: a call made while serving a user keeps that
// user's token (the chassis client forwards it); background work uses the service account's.
func authorize(ctx context.Context, account *ServiceAccount) (context.Context, error) {
	if _, ok := auth.FromContext(ctx); ok {
		return ctx, nil
	}
	token, err := account.Token(ctx)
	if err != nil {
		return nil, err
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), nil
}

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
	client  paymentv1.PaymentServiceClient
	account *ServiceAccount
}

// NewPayments returns order.Payments backed by the payment service, using account for
// background work.
func NewPayments(client paymentv1.PaymentServiceClient, account *ServiceAccount) *Payments {
	return &Payments{client: client, account: account}
}

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
	ctx, err := authorize(ctx, p.account)
	if err != nil {
		return order.Payment{}, err
	}
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
	ctx, err := authorize(ctx, p.account)
	if err != nil {
		return err
	}
	_, err = p.client.RefundPayment(ctx, &paymentv1.RefundPaymentRequest{PaymentId: paymentID, IdempotencyKey: key, Reason: reason})
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
	ctx, err := authorize(ctx, p.account)
	if err != nil {
		return order.Payment{}, false, err
	}
	resp, err := p.client.ListPayments(ctx, &paymentv1.ListPaymentsRequest{OrderId: orderID, UserId: userID, PageSize: 1})
	if err != nil {
		return order.Payment{}, false, wrap("find the order's payment", err)
	}
	if len(resp.GetPayments()) == 0 {
		return order.Payment{}, false, nil
	}
	return toPayment(resp.GetPayments()[0]), true, nil
}
