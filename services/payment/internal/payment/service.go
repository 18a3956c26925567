package payment

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/feed"
	"github.com/meshmart/meshmart/pkg/idempotency"
	"github.com/meshmart/meshmart/pkg/money"
	"github.com/meshmart/meshmart/pkg/paging"
)

// Service carries out the payment use cases. It is safe for concurrent use, and several replicas
// may share one store.
type Service struct {
	store     Store
	processor Processor
	pages     *paging.Codec
	// timeout bounds one processor call; the claim on a payment outlives it by leaseSlack, so a
	// replica that dies mid-call blocks a retry for at most timeout+leaseSlack.
	timeout    time.Duration
	leaseSlack time.Duration
	poll       time.Duration
	now        func() time.Time
	observer   Observer
}

// Observer is told what the charges come to, for the service's metrics.
type Observer interface {
	// Charged is told of each charge the processor answered, with the status it settled in
	// (StatusCaptured, StatusDeclined, StatusFailed), or StatusPending when the processor's
	// answer is unknown and the charge stays pending for the next call to try again.
	Charged(Status)
}

// Option configures NewService.
type Option func(*Service)

// WithObserver tells o of every charge; without it nothing is told.
func WithObserver(o Observer) Option { return func(s *Service) { s.observer = o } }

// NewService returns a Service charging through processor, giving it processorTimeout per call.
func NewService(store Store, processor Processor, processorTimeout time.Duration, opts ...Option) *Service {
	s := &Service{store: store, processor: processor, pages: paging.NewCodec(store.PageKey), timeout: processorTimeout, leaseSlack: 5 * time.Second,
		poll: 25 * time.Millisecond, now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
	for _, opt := range opts {
		opt(s)
	}
	return s
}

// charged tells the observer, if any, of a charge's status.
func (s *Service) charged(st Status) {
	if s.observer != nil {
		s.observer.Charged(st)
	}
}

// ChargeInput is a request to charge an order.
type ChargeInput struct {
	// UserID is the payer; empty means the user whose token the call carries. Only admins and
	// services may name another user, and a service calling with no user's token must name one.
	UserID         string
	OrderID        string
	Amount         Money
	Token          string
	IdempotencyKey string
}

// payerOf is who a charge by caller naming userID (perhaps empty) is paid by: the user named, if
// the caller may act for them (an admin or a service may act for anyone); else the user whose
// token the call carries. A service with no user's token must name the payer (ErrPayerRequired).
func payerOf(caller auth.Identity, userID string) (string, error) {
	switch {
	case !caller.IsUser() && !caller.IsService():
		return "", ErrPermissionDenied
	case userID == "" && !caller.IsUser():
		return "", ErrPayerRequired
	case userID == "":
		return caller.Subject, nil
	case !caller.CanActFor(userID):
		return "", ErrPermissionDenied
	}
	return userID, nil
}

// Charge charges in.Amount to the payer. The same caller (see KeyOwner), payer and key with the
// same parameters
// returns the first call's payment and never charges again, whichever replica answers and however
// many calls race; with other parameters it is ErrKeyReused. A declined or failed charge is a
// payment, not an error. When the processor's answer is unknown the payment is returned PENDING,
// and the next call with the same key tries again.
func (s *Service) Charge(ctx context.Context, caller auth.Identity, in ChargeInput) (Payment, error) {
	if in.Amount.Minor <= 0 {
		return Payment{}, fault.Invalid("amount", "must be positive")
	}
	if err := money.CheckCurrency("amount.currency_code", in.Amount.Currency); err != nil {
		return Payment{}, err
	}
	payer, err := payerOf(caller, in.UserID)
	if err != nil {
		return Payment{}, err
	}
	// A new payment is inserted already claimed, its first attempt counted: the call that
	// created it goes straight to the processor, without a second write to claim it.
	now := s.now()
	p := Payment{
		ID: uuid.NewString(), OrderID: in.OrderID, UserID: payer, Amount: in.Amount,
		Status: StatusPending, IdempotencyKey: in.IdempotencyKey, KeyOwner: KeyOwner(caller), CreateTime: now, UpdateTime: now,
		Attempts: 1, LeaseUntil: now.Add(s.timeout + s.leaseSlack),
		// The token is part of the fingerprint only as a hash: card data is never stored.
		Fingerprint: idempotency.Fingerprint(in.OrderID, in.Amount.Currency, fmt.Sprint(in.Amount.Minor), idempotency.Fingerprint(in.Token)),
	}
	err = s.store.CreatePending(ctx, p)
	claimed := err == nil
	switch {
	case errors.Is(err, ErrDuplicateKey):
		existing, err := s.store.GetByKey(ctx, p.KeyOwner, payer, in.IdempotencyKey)
		if err != nil {
			return Payment{}, err
		}
		if existing.Fingerprint != p.Fingerprint {
			return Payment{}, ErrKeyReused
		}
		p = existing
	case err != nil:
		return Payment{}, err
	}
	if p.Status != StatusPending {
		return p, nil
	}
	return s.settle(ctx, p, in.Token, claimed)
}

// settle claims pending payment p unless claimed (the caller inserted it claimed), asks the
// processor, and records the outcome. When another call holds the claim it waits for that call's
// outcome.
func (s *Service) settle(ctx context.Context, p Payment, token string, claimed bool) (Payment, error) {
	attempt := p.Attempts
	for !claimed {
		now := s.now()
		var ok bool
		var err error
		attempt, ok, err = s.store.Claim(ctx, p.ID, now, now.Add(s.timeout+s.leaseSlack))
		if err != nil {
			return Payment{}, err
		}
		if ok {
			break
		}
		select {
		case <-ctx.Done():
			return Payment{}, ErrInProgress
		case <-time.After(s.poll):
		}
		if p, err = s.store.Get(ctx, p.ID); err != nil {
			return Payment{}, err
		}
		if p.Status != StatusPending {
			return p, nil
		}
	}

	callCtx, cancel := context.WithTimeout(ctx, s.timeout)
	outcome, err := s.processor.Charge(callCtx, ChargeRequest{PaymentID: p.ID, Token: token, Amount: p.Amount, Attempt: attempt})
	cancel()
	if err != nil {
		// The money may or may not have moved: stay pending, and let the next call ask again.
		// The release must happen even when the caller has gone.
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer rcancel()
		if rerr := s.store.Release(rctx, p.ID); rerr != nil {
			return Payment{}, rerr
		}
		s.charged(StatusPending)
		p.Attempts = attempt
		return p, nil
	}

	now := s.now()
	p.Attempts, p.UpdateTime, p.LeaseUntil = attempt, now, time.Time{}
	var events []Event
	switch {
	case outcome.Approved:
		p.Status = StatusCaptured
		events = []Event{s.event(EventAuthorized, p, p.Amount), s.event(EventCaptured, p, p.Amount)}
	case outcome.Failed:
		p.Status, p.DeclineReason, p.FailureMessage = StatusFailed, outcome.Reason, outcome.Message
		events = []Event{s.event(EventFailed, p, p.Amount)}
	default:
		p.Status, p.DeclineReason, p.FailureMessage = StatusDeclined, outcome.Reason, outcome.Message
		events = []Event{s.event(EventDeclined, p, p.Amount)}
	}
	// Settling must not be lost to a caller that hung up after the processor answered.
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer scancel()
	err = s.store.Settle(sctx, p, events)
	if errors.Is(err, ErrAlreadySettled) {
		return s.store.Get(sctx, p.ID)
	}
	if err != nil {
		return Payment{}, err
	}
	s.charged(p.Status)
	return p, nil
}

func (s *Service) event(t EventType, p Payment, amount Money) Event {
	return Event{ID: uuid.NewString(), Type: t, Amount: amount, Payment: p, CreateTime: p.UpdateTime}
}

// RefundInput is a request to refund a payment.
type RefundInput struct {
	PaymentID string
	// Amount is what to refund; nil refunds all that is left.
	Amount         *Money
	Reason         string
	IdempotencyKey string
}

// Refund returns money from a captured payment the caller may act on. The refunds of a payment
// never add up to more than its capture, however many race; keys work as in Charge, scoped to the
// caller and the payer.
func (s *Service) Refund(ctx context.Context, caller auth.Identity, in RefundInput) (Payment, Refund, error) {
	p, err := s.Get(ctx, caller, in.PaymentID)
	if err != nil {
		return Payment{}, Refund{}, err
	}
	amountPart := "rest"
	if in.Amount != nil {
		amountPart = fmt.Sprint(in.Amount.Minor)
	}
	fp := idempotency.Fingerprint(in.PaymentID, amountPart, in.Reason)
	// A repeated request returns the refund it made, whatever the payment's state now. Keys are
	// scoped to the caller and the payer, like charge keys.
	owner := KeyOwner(caller)
	if prev, err := s.store.GetRefundByKey(ctx, owner, p.UserID, in.IdempotencyKey); err == nil {
		if prev.Fingerprint != fp {
			return Payment{}, Refund{}, ErrKeyReused
		}
		return p, prev, nil
	} else if !errors.Is(err, ErrNotFound) {
		return Payment{}, Refund{}, err
	}
	if p.Status != StatusCaptured && p.Status != StatusPartiallyRefunded {
		return Payment{}, Refund{}, ErrNotRefundable
	}
	left := p.Amount.Minor - p.RefundedMinor
	amount := left
	if in.Amount != nil {
		if in.Amount.Currency != p.Amount.Currency {
			return Payment{}, Refund{}, fault.Invalid("amount.currency_code", "must be the payment's currency, "+p.Amount.Currency)
		}
		if in.Amount.Minor <= 0 {
			return Payment{}, Refund{}, fault.Invalid("amount", "must be positive")
		}
		amount = in.Amount.Minor
	}
	if amount <= 0 || amount > left {
		return Payment{}, Refund{}, ErrRefundExceeds
	}
	r := Refund{ID: uuid.NewString(), PaymentID: p.ID, UserID: p.UserID, AmountMinor: amount, Reason: in.Reason,
		IdempotencyKey: in.IdempotencyKey, KeyOwner: owner, Fingerprint: fp, CreateTime: s.now()}
	after := p
	after.RefundedMinor += amount
	after.Status = StatusPartiallyRefunded
	if after.RefundedMinor == after.Amount.Minor {
		after.Status = StatusRefunded
	}
	after.UpdateTime = r.CreateTime
	updated, err := s.store.Refund(ctx, r, s.event(EventRefunded, after, Money{Currency: p.Amount.Currency, Minor: amount}))
	if errors.Is(err, ErrDuplicateKey) {
		// A concurrent call with the same key won the race: answer as it did.
		return s.Refund(ctx, caller, in)
	}
	if err != nil {
		return Payment{}, Refund{}, err
	}
	return updated, r, nil
}

// Get returns a payment the caller may see: their own, or any for an admin or a service.
func (s *Service) Get(ctx context.Context, caller auth.Identity, id string) (Payment, error) {
	p, err := s.store.Get(ctx, id)
	if err != nil {
		return Payment{}, err
	}
	if !caller.CanActFor(p.UserID) {
		return Payment{}, ErrPermissionDenied
	}
	return p, nil
}

// scope narrows f to what the caller may see: an admin anything; a user their own payments; a
// service (which may act for anyone) the payments of the user or order it names, else those of
// the user whose token it forwards. A service with neither a user's token nor a user or order
// filter is ErrFilterRequired, never every payment there is. A key filter matches only the
// caller's own keys.
func scope(caller auth.Identity, f Filter) (Filter, error) {
	f.KeyOwner = ""
	if f.IdempotencyKey != "" {
		f.KeyOwner = KeyOwner(caller)
	}
	switch {
	case caller.IsAdmin():
		return f, nil
	case !caller.IsUser() && !caller.IsService():
		return Filter{}, ErrPermissionDenied
	case f.UserID != "":
		if !caller.CanActFor(f.UserID) {
			return Filter{}, ErrPermissionDenied
		}
		return f, nil
	case caller.IsUser():
		f.UserID = caller.Subject
		return f, nil
	case f.OrderID == "":
		return Filter{}, ErrFilterRequired
	}
	return f, nil
}

// List returns one page of the payments matching f that the caller may see, newest first, and
// the token of the next page ("" on the last). A pageToken not issued by List for f is
// paging.ErrInvalidToken.
func (s *Service) List(ctx context.Context, caller auth.Identity, f Filter, pageSize int, pageToken string) ([]Payment, string, error) {
	f, err := scope(caller, f)
	if err != nil {
		return nil, "", err
	}
	return paging.List(ctx, s.pages, "ListPayments", f, pageSize, pageToken, func(after *paging.Cursor, limit int) ([]Payment, error) {
		return s.store.List(ctx, f, after, limit)
	}, Payment.Cursor)
}

// EventFeed returns a feed of the store's event log, polled every interval while a Watch listens:
// one per replica, shared by all its watch streams (see Watch). log gets the feed's errors.
func (s *Service) EventFeed(interval time.Duration, log *slog.Logger) *feed.Feed[Event] {
	return feed.New(feed.Source[Event]{
		Last: s.store.LastEventSeq,
		After: func(ctx context.Context, seq int64, limit int) ([]Event, error) {
			return s.store.EventsAfter(ctx, Filter{}, seq, limit)
		},
		Seq: func(e Event) int64 { return e.Seq },
	}, interval, log)
}

// Watch calls send for every event matching f that the caller may see, from now on, in order,
// until ctx ends or send fails. Events written by any replica are seen: events (from EventFeed) polls
// the shared store once for every stream of the replica, and Watch keeps those of f.
func (s *Service) Watch(ctx context.Context, caller auth.Identity, f Filter, events *feed.Feed[Event], send func(Event) error) error {
	f, err := scope(caller, f)
	if err != nil {
		return err
	}
	sub, err := events.Subscribe(ctx)
	if err != nil {
		return err
	}
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sub.Done():
			return sub.Err()
		case batch := <-sub.Batches():
			for _, e := range batch {
				if !f.matches(e.Payment) {
					continue
				}
				if err := send(e); err != nil {
					return err
				}
			}
		}
	}
}

// Events returns up to limit payment events of every payment after seq, in order, for a service
// that follows all payments (ListPaymentEvents): a limit of zero or less means 100, more than
// paging.MaxSize means that. Only services and admins may read them.
func (s *Service) Events(ctx context.Context, caller auth.Identity, seq int64, limit int) ([]Event, error) {
	if !caller.IsService() && !caller.IsAdmin() {
		return nil, ErrPermissionDenied
	}
	if limit <= 0 {
		limit = 100
	}
	return s.store.EventsAfter(ctx, Filter{}, seq, min(limit, paging.MaxSize))
}

// matches reports whether p is selected by f, as the store's queries select.
func (f Filter) matches(p Payment) bool {
	return (f.OrderID == "" || p.OrderID == f.OrderID) && (f.UserID == "" || p.UserID == f.UserID)
}
