// Package order holds the order service's business rules: pricing an order exactly, paying for it
// through the payment service, settling what a failure left unknown, cancelling with a refund,
// and the update log TrackOrders streams. It knows nothing of gRPC or SQL; the users and payments
// it depends on are interfaces that internal/remote implements with gRPC clients.
package order

import (
	"context"
	"time"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/paging"
)

// Status is where an order stands; numbered as in the contract.
type Status int

// Statuses.
const (
	StatusUnspecified Status = iota
	StatusPending
	StatusPaid
	StatusPaymentFailed
	StatusCancelling
	StatusCancelled
	StatusShipped
	StatusCompleted
)

// Item is a quantity of one product at a unit price in the order's currency.
type Item struct {
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
}

// Order is a purchase by one user.
type Order struct {
	ID, UserID     string
	Items          []Item
	Currency       string
	TotalMinor     int64
	Status         Status
	PaymentID      string
	FailureReason  string
	IdempotencyKey string
	Fingerprint    string
	// PaymentToken is kept only while the payment is unsettled, so the reconciler can repeat the
	// charge; it is cleared once the order leaves PENDING.
	PaymentToken string
	Revision     int64
	LeaseUntil   time.Time
	CreateTime   time.Time
	UpdateTime   time.Time
}

// Update is one entry of the update log: an order's state right after a change of status.
type Update struct {
	Seq            int64
	Order          Order
	PreviousStatus Status
}

// Filter selects orders; empty fields select everything.
type Filter struct {
	UserID string
	Status Status
}

// Cursor is o's position in the newest-first order of orders.
func (o Order) Cursor() paging.Cursor { return paging.Cursor{CreateTime: o.CreateTime, ID: o.ID} }

// Sentinel errors, each with its code and a message written for the client; the transport maps
// them with grpcerr.ToStatus.
var (
	ErrNotFound         = fault.New(fault.NotFound, "order not found")
	ErrPermissionDenied = fault.New(fault.PermissionDenied, "permission denied")
	// ErrKeyReused: the idempotency key was used before for another order.
	ErrKeyReused = fault.New(fault.FailedPrecondition, "the idempotency key was already used for a different order")
	// ErrUserInactive: the caller's account is not active.
	ErrUserInactive = fault.New(fault.FailedPrecondition, "the account is not active")
	// ErrNotCancellable: the order has shipped or completed.
	ErrNotCancellable = fault.New(fault.FailedPrecondition, "a shipped or completed order cannot be cancelled")
	// ErrBusy: another call is settling the order right now.
	ErrBusy = fault.New(fault.Unavailable, "the order is being settled by another call; retry")
	// ErrUnavailable: a dependency could not be reached. Derive instances with Wrap, the
	// dependency's error as the cause: the client is told only this message.
	ErrUnavailable = fault.New(fault.Unavailable, "a service the order depends on is unavailable; retry later")
	// ErrAlreadyChanged: a conditional write found the order changed by another call.
	ErrAlreadyChanged = fault.New(fault.Aborted, "the order was changed by another call; read it again")
	// ErrDuplicateKey: an insert hit an existing order with the same user and idempotency key.
	ErrDuplicateKey = fault.New(fault.AlreadyExists, "an order with this idempotency key already exists")
	// ErrPaymentPending: the order is kept PENDING because its payment's outcome is unknown; the
	// server settles it later, and repeating the request with the same key returns it. Instances
	// name the order (see paymentPending).
	ErrPaymentPending = fault.New(fault.Unavailable, "the order is kept pending: its payment could not be settled now; "+
		"the server will settle it, and repeating the request with the same idempotency key returns it")
)

// paymentPending returns ErrPaymentPending for order orderID, caused by cause: the client sees
// the order's id in an ErrorInfo (reason PAYMENT_PENDING, domain order.meshmart, metadata
// order_id) so that it can track the order; the cause goes to the log only.
func paymentPending(orderID string, cause error) error {
	return ErrPaymentPending.WithInfo("order.meshmart", "PAYMENT_PENDING", "order_id", orderID).Wrap(cause)
}

// PaymentStatus is what the payment service says of a charge.
type PaymentStatus int

// Payment outcomes.
const (
	PaymentPending PaymentStatus = iota
	PaymentCaptured
	PaymentDeclined
	PaymentRefunded
)

// Payment is what the order service knows of a charge.
type Payment struct {
	ID     string
	Status PaymentStatus
	Reason string
}

// ChargeRequest asks the payment service to charge an order.
type ChargeRequest struct {
	OrderID, UserID, Currency, Token, IdempotencyKey string
	AmountMinor                                      int64
}

// Payments is what the order service needs of the payment service. Errors it returns that are
// not about the request itself must wrap ErrUnavailable.
type Payments interface {
	// Charge charges the order; repeating it with the same key returns the same payment.
	Charge(ctx context.Context, req ChargeRequest) (Payment, error)
	// Refund refunds all that is left of a payment; repeating it with the same key is harmless.
	Refund(ctx context.Context, paymentID, userID, key, reason string) error
	// ForOrder returns the payment made for an order, if any (ok false).
	ForOrder(ctx context.Context, orderID, userID string) (p Payment, ok bool, err error)
}

// Users is what the order service needs of the user service.
type Users interface {
	// Active reports whether the account exists and is active. Unreachable means ErrUnavailable.
	Active(ctx context.Context, userID string) (bool, error)
}

// Store keeps orders and their update log. It must be safe for several replicas sharing one
// database.
type Store interface {
	// Create stores o and its first update, failing with ErrDuplicateKey when its user already
	// used its idempotency key.
	Create(ctx context.Context, o Order) error
	// GetByKey returns the order userID created with key, or ErrNotFound.
	GetByKey(ctx context.Context, userID, key string) (Order, error)
	// Get returns an order, or ErrNotFound.
	Get(ctx context.Context, id string) (Order, error)
	// Claim takes the right to settle order id until leaseUntil, provided its status is one of
	// statuses and nobody holds it at now.
	Claim(ctx context.Context, id string, statuses []Status, now, leaseUntil time.Time) (bool, error)
	// Release gives up a claim without changing the order.
	Release(ctx context.Context, id string) error
	// Transition stores o (its revision one above the stored one) and its update, atomically,
	// releasing any claim; if the stored revision moved meanwhile it returns ErrAlreadyChanged.
	Transition(ctx context.Context, o Order, previous Status) error
	// Due returns up to limit orders in one of statuses that nobody holds and that last changed
	// before changedBefore, oldest first.
	Due(ctx context.Context, statuses []Status, changedBefore, now time.Time, limit int) ([]Order, error)
	// List returns up to limit orders matching f after the cursor, newest first.
	List(ctx context.Context, f Filter, after *paging.Cursor, limit int) ([]Order, error)
	// LastUpdateSeq returns the newest update's sequence number, 0 when there is none.
	LastUpdateSeq(ctx context.Context) (int64, error)
	// UpdatesAfter returns up to limit updates of the given orders (of every order when
	// orderIDs is empty) with a sequence number above seq, in order.
	UpdatesAfter(ctx context.Context, orderIDs []string, seq int64, limit int) ([]Update, error)
	// PageKey returns the key page tokens are signed with, the same for every replica sharing
	// the store (see paging.NewCodec).
	PageKey(ctx context.Context) ([]byte, error)
}
