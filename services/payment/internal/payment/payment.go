// Package payment holds the payment service's business rules: idempotent charges through a
// payment processor, refunds that never exceed the capture, who may see what, and the event
// record every state change leaves. It knows nothing of gRPC or SQL.
package payment

import (
	"context"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/paging"
)

// Status is where a payment stands; numbered as in the contract.
type Status int

// Statuses.
const (
	StatusUnspecified Status = iota
	StatusPending
	StatusCaptured
	StatusDeclined
	StatusFailed
	StatusPartiallyRefunded
	StatusRefunded
)

// DeclineReason is why a charge did not go through; numbered as in the contract.
type DeclineReason int

// Decline reasons.
const (
	DeclineUnspecified DeclineReason = iota
	DeclineCardDeclined
	DeclineInsufficientFunds
	DeclineProcessorError
	DeclineInvalidPaymentMethod
)

// EventType is the kind of a state change; numbered as in the contract.
type EventType int

// Event types.
const (
	EventUnspecified EventType = iota
	EventAuthorized
	EventCaptured
	EventDeclined
	EventFailed
	EventRefunded
)

// Money is an exact amount in minor units of a currency.
type Money struct {
	Currency string
	Minor    int64
}

// Payment is a charge for one order.
type Payment struct {
	ID, OrderID, UserID string
	Amount              Money
	RefundedMinor       int64 // in Amount.Currency
	Status              Status
	DeclineReason       DeclineReason
	FailureMessage      string
	IdempotencyKey      string
	KeyOwner            string // the namespace of IdempotencyKey: the caller that wrote it (see KeyOwner)
	Fingerprint         string // of the request's parameters, to tell a repeat from a reuse of the key
	Attempts            int    // processor calls started
	LeaseUntil          time.Time
	Refunds             []Refund
	CreateTime          time.Time
	UpdateTime          time.Time
}

// Refund is money returned from a captured payment.
type Refund struct {
	ID, PaymentID, UserID string
	AmountMinor           int64 // in the payment's currency
	Reason                string
	IdempotencyKey        string
	KeyOwner              string // the namespace of IdempotencyKey, as for Payment
	Fingerprint           string
	CreateTime            time.Time
}

// Event records one state change of a payment, with the payment as it stood right after it.
type Event struct {
	Seq        int64 // the store's order of events, increasing in commit order
	ID         string
	Type       EventType
	Amount     Money
	Payment    Payment // Refunds left empty
	CreateTime time.Time
}

// Filter selects payments or events; empty fields select everything.
type Filter struct {
	OrderID, UserID string
	// IdempotencyKey selects the payment created with this key in the namespace KeyOwner (the
	// caller's own: see scope); payments only.
	IdempotencyKey, KeyOwner string
}

// KeyOwner is the namespace of the idempotency keys caller writes with: a service's own
// ("service:order"), whether or not it forwards a user's token, so that the order service's call
// while serving a user and its reconciler's retry share their keys; otherwise the user's
// ("user:<id>", admins included). A key one caller used therefore never matches another caller's
// payment or refund, and no caller can claim the keys the order service will use (order:<id>).
func KeyOwner(caller auth.Identity) string {
	if caller.IsService() {
		return "service:" + caller.Service
	}
	return "user:" + caller.Subject
}

// Cursor is p's position in the newest-first order of payments.
func (p Payment) Cursor() paging.Cursor { return paging.Cursor{CreateTime: p.CreateTime, ID: p.ID} }

// Sentinel errors, each with its code and a message written for the client; the transport maps
// them with grpcerr.ToStatus.
var (
	ErrNotFound         = fault.New(fault.NotFound, "payment not found")
	ErrPermissionDenied = fault.New(fault.PermissionDenied, "permission denied")
	// ErrPayerRequired: a service charged with no user's token and named no payer.
	ErrPayerRequired = fault.Invalid("user_id", "required when the call carries no user's token")
	// ErrFilterRequired: a service listed or watched with no user's token and no user or order
	// filter, which would be every payment.
	ErrFilterRequired = fault.Invalid("user_id", "filter by user_id or order_id when the call carries no user's token")
	// ErrKeyReused: the idempotency key was used before with other parameters.
	ErrKeyReused = fault.New(fault.FailedPrecondition, "the idempotency key was already used with different parameters")
	// ErrRefundExceeds: the refund would return more than is left of the capture.
	ErrRefundExceeds = fault.New(fault.FailedPrecondition, "the refund exceeds what is left of the captured amount")
	// ErrNotRefundable: only captured payments can be refunded.
	ErrNotRefundable = fault.New(fault.FailedPrecondition, "only a captured payment can be refunded")
	// ErrAlreadySettled: the store found the payment settled by another call.
	ErrAlreadySettled = fault.New(fault.Aborted, "the payment was settled by another call; read it again")
	// ErrInProgress: another call with the same key is still talking to the processor. It is
	// Unavailable so that the chassis client retries CreatePayment, which is idempotent.
	ErrInProgress = fault.New(fault.Unavailable, "a charge with this idempotency key is in progress; retry with the same key")
	// ErrDuplicateKey: an insert hit an existing payment or refund with the same payer, key owner
	// and idempotency key.
	ErrDuplicateKey = fault.New(fault.AlreadyExists, "a payment or refund with this idempotency key already exists")
)

// Store keeps payments, refunds and events. It must be safe for several replicas sharing one
// database.
type Store interface {
	// CreatePending stores p, failing with ErrDuplicateKey when its payer already used its
	// idempotency key.
	CreatePending(ctx context.Context, p Payment) error
	// GetByKey returns the payment of userID that owner created with key, or ErrNotFound.
	GetByKey(ctx context.Context, owner, userID, key string) (Payment, error)
	// Get returns the payment with its refunds, or ErrNotFound.
	Get(ctx context.Context, id string) (Payment, error)
	// Claim takes the right to call the processor for pending payment id until leaseUntil,
	// provided nobody holds it at now; it returns the attempt number it took, or ok false.
	Claim(ctx context.Context, id string, now, leaseUntil time.Time) (attempt int, ok bool, err error)
	// Release gives up a claim whose outcome is unknown, so the next call may try again.
	Release(ctx context.Context, id string) error
	// Settle stores the final state of pending payment p and its events, atomically. If p is
	// no longer pending it changes nothing and returns ErrAlreadySettled.
	Settle(ctx context.Context, p Payment, events []Event) error
	// Refund records r against its payment and the event, atomically, unless the refunds would
	// then exceed the capture (ErrRefundExceeds) or r's key owner already used r's key for the
	// user (ErrDuplicateKey). It returns the payment after the refund.
	Refund(ctx context.Context, r Refund, event Event) (Payment, error)
	// GetRefundByKey returns the refund of userID's payments that owner made with key, or
	// ErrNotFound.
	GetRefundByKey(ctx context.Context, owner, userID, key string) (Refund, error)
	// List returns up to limit payments matching f after the cursor, newest first.
	List(ctx context.Context, f Filter, after *paging.Cursor, limit int) ([]Payment, error)
	// LastEventSeq returns the newest event's sequence number, 0 when there is none.
	LastEventSeq(ctx context.Context) (int64, error)
	// EventsAfter returns up to limit events matching f with a sequence number above seq, in
	// order.
	EventsAfter(ctx context.Context, f Filter, seq int64, limit int) ([]Event, error)
	// PageKey returns the key page tokens are signed with, the same for every replica sharing
	// the store (see paging.NewCodec).
	PageKey(ctx context.Context) ([]byte, error)
}
