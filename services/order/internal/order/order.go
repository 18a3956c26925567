// Package order holds the order service's business rules: pricing an order exactly, paying for it
// through the payment service, settling what a failure left unknown, cancelling with a refund,
// and the update log TrackOrders streams. It knows nothing of gRPC or SQL; the users and payments
// it depends on are interfaces the transport layer implements.
package order

import (
	"context"
	"errors"
	"fmt"
	"time"

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

// Sentinel errors; the transport maps each to one gRPC status code.
var (
	ErrNotFound         = errors.New("order not found")
	ErrPermissionDenied = errors.New("permission denied")
	// ErrKeyReused: the idempotency key was used before for another order.
	ErrKeyReused = errors.New("the idempotency key was already used for a different order")
	// ErrUserInactive: the caller's account is not active.
	ErrUserInactive = errors.New("the account is not active")
	// ErrNotCancellable: the order has shipped or completed.
	ErrNotCancellable = errors.New("a shipped or completed order cannot be cancelled")
	// ErrBusy: another call is settling the order right now.
	ErrBusy = errors.New("the order is being settled by another call; retry")
	// ErrUnavailable wraps a dependency that could not be reached.
	ErrUnavailable = errors.New("a service the order depends on is unavailable")
	// ErrAlreadyChanged: a conditional write found the order changed by another call.
	ErrAlreadyChanged = errors.New("the order was changed by another call")
)

// PendingError reports an order kept PENDING because its payment's outcome is unknown: the
// server settles it later, and repeating the request with the same key returns it.
type PendingError struct {
	OrderID string
	Cause   error
}

func (e *PendingError) Error() string {
	return fmt.Sprintf("order %s is kept pending: its payment could not be settled now (%v); it will be settled by the server, and repeating the request with the same idempotency key returns it", e.OrderID, e.Cause)
}

func (e *PendingError) Unwrap() error { return e.Cause }

// ConflictError reports an insert that hit an existing order with the same user and key.
type ConflictError struct{}

func (e *ConflictError) Error() string { return "an order with this idempotency key already exists" }

// InvalidError reports a bad value in Field.
type InvalidError struct{ Field, Reason string }

func (e *InvalidError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

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
	// Create stores o and its first update, failing with a *ConflictError when its user already
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
	// UpdatesAfter returns up to limit updates of the given orders with a sequence number above
	// seq, in order.
	UpdatesAfter(ctx context.Context, orderIDs []string, seq int64, limit int) ([]Update, error)
	// PageKey returns the key page tokens are signed with, the same for every replica sharing
	// the store (see paging.NewCodec).
	PageKey(ctx context.Context) ([]byte, error)
}
