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
	// Attempts counts the reconciler's failed attempts at the order in its current status, and
	// NextAttemptAt is when it may try again (zero: once the grace has passed); see Reconciler.
	// Both start over when the status changes.
	Attempts      int
	NextAttemptAt time.Time
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
	// PaymentRefunded: all of the capture was refunded.
	PaymentRefunded
	// PaymentPartiallyRefunded: some of the capture was refunded, the rest is still captured.
	PaymentPartiallyRefunded
)

// Payment is what the order service knows of a charge.
type Payment struct {
	ID, OrderID string
	Status      PaymentStatus
	Reason      string
}

// PaymentEvent is one entry of the payment service's log of every payment's changes, with the
// payment as it stood right after the change.
type PaymentEvent struct {
	// Seq is the event's position in the log, growing in commit order.
	Seq     int64
	Payment Payment
}

// ChargeRequest asks the payment service to charge an order.
type ChargeRequest struct {
	OrderID, UserID, Currency, Token, IdempotencyKey string
	AmountMinor                                      int64
}

// chargeKey is the idempotency key of order id's charge. The payment service scopes keys to the
// caller, so it names the order service's own charge, whoever else used the same string.
func chargeKey(id string) string { return "order:" + id }

// Payments is what the order service needs of the payment service. Errors it returns that are
// not about the request itself must wrap ErrUnavailable. Refund, Get, ByKey and EventsAfter are
// made as the order service itself, never with a user's token.
type Payments interface {
	// Charge charges the order; repeating it with the same key returns the same payment.
	Charge(ctx context.Context, req ChargeRequest) (Payment, error)
	// Refund refunds all that is left of a payment; repeating it with the same key is harmless,
	// and so is refunding a payment with nothing left to refund.
	Refund(ctx context.Context, paymentID, key, reason string) error
	// Get returns a payment by its id.
	Get(ctx context.Context, paymentID string) (Payment, error)
	// ByKey returns the payment of userID the order service itself created with key, if any (ok
	// false): never another caller's payment.
	ByKey(ctx context.Context, userID, key string) (p Payment, ok bool, err error)
	// EventsAfter returns up to limit payment events after seq, in order.
	EventsAfter(ctx context.Context, seq int64, limit int) ([]PaymentEvent, error)
}

// Users is what the order service needs of the user service: whether an account may order, when
// the caller's token does not say it was active (see Service.Create).
type Users interface {
	// Active reports whether the account exists and is active. Unreachable means ErrUnavailable.
	Active(ctx context.Context, userID string) (bool, error)
}

// Store keeps orders and their update log, and the catalog they are priced from. It must be safe
// for several replicas sharing one database.
type Store interface {
	ProductStore
	// Create stores o and its first update, failing with ErrDuplicateKey when its user already
	// used its idempotency key. A new order comes claimed until o.LeaseUntil (see Claim), so the
	// replica that placed it settles it without a second write.
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
	// releasing any claim and starting the reconciler's attempts over; if the stored revision moved meanwhile it returns ErrAlreadyChanged.
	Transition(ctx context.Context, o Order, previous Status) error
	// Due returns the orders q selects, fairly across users (see DueQuery).
	Due(ctx context.Context, q DueQuery) ([]Order, error)
	// Reschedule records a failed attempt at order id: its attempts and next attempt time,
	// provided it is still in status with attempts-1 attempts (so that two replicas never count
	// one twice, nor touch an order that moved on); it reports whether it did.
	Reschedule(ctx context.Context, id string, status Status, attempts int, next time.Time) (bool, error)
	// CountUnsettled returns, for each of createdBefore, how many orders in one of statuses were
	// created before it.
	CountUnsettled(ctx context.Context, statuses []Status, createdBefore []time.Time) ([]int64, error)
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
	// PaymentFeedSeq returns the seq of the last payment event the order service handled, 0
	// before the first.
	PaymentFeedSeq(ctx context.Context) (int64, error)
	// AdvancePaymentFeed records that the payment events up to seq were handled. It never moves
	// the position back, so replicas following the feed together cannot undo each other.
	AdvancePaymentFeed(ctx context.Context, seq int64) error
}
