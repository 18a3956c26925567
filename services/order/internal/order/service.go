package order

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"time"

	"github.com/google/uuid"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/feed"
	"github.com/meshmart/meshmart/pkg/idempotency"
	"github.com/meshmart/meshmart/pkg/paging"
)

// Service carries out the order use cases. It is safe for concurrent use, and several replicas
// may share one store: a claim (a lease on one order, taken with a conditional update) makes sure
// only one of them settles an order at a time.
type Service struct {
	store    Store
	users    Users
	payments Payments
	pages    *paging.Codec
	lease    time.Duration
	now      func() time.Time
	statuses StatusObserver
}

// StatusObserver is told of every status an order enters, once, by the replica that stored the
// change: for metrics of orders by status.
type StatusObserver interface {
	Entered(Status)
}

// ObserveStatuses has o told of every status an order enters from now on; call it before the
// Service serves. Without it nobody is.
func (s *Service) ObserveStatuses(o StatusObserver) { s.statuses = o }

// entered tells the observer, if any, that an order entered st.
func (s *Service) entered(st Status) {
	if s.statuses != nil {
		s.statuses.Entered(st)
	}
}

// NewService returns a Service. lease bounds how long a claim on an order lasts; it must outlast
// a payment call, so a replica that dies mid-call blocks the order for at most that long.
func NewService(store Store, users Users, payments Payments, lease time.Duration) *Service {
	return &Service{store: store, users: users, payments: payments, pages: paging.NewCodec(store.PageKey), lease: lease,
		now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

// CreateInput is a request to place an order. Items carry no price unless the client sent one
// (deprecated), which must then be the catalog's; Currency likewise.
type CreateInput struct {
	Items          []Item
	Currency       string
	Token          string
	IdempotencyKey string
}

// total sums quantity times unit price exactly, refusing anything that would overflow.
func total(items []Item) (int64, error) {
	if len(items) == 0 {
		return 0, fault.Invalid("items", "an order needs at least one item")
	}
	var sum uint64
	for i, it := range items {
		if it.Quantity <= 0 || it.UnitPriceMinor <= 0 {
			return 0, fault.Invalid(fmt.Sprintf("items[%d]", i), "quantity and unit price must be positive")
		}
		hi, line := bits.Mul64(uint64(it.Quantity), uint64(it.UnitPriceMinor))
		next, carry := bits.Add64(sum, line, 0)
		if hi != 0 || carry != 0 || next > 1<<63-1 {
			return 0, fault.Invalid("items", "the order total is too large")
		}
		sum = next
	}
	return int64(sum), nil
}

// fingerprint identifies an order's request: its currency, payment token and priced items.
// price gives each item's unit price (the catalog's for a new order, the stored order's for a
// retry), so a retry that sends no price matches an order placed with prices, and the
// fingerprints of orders placed before the catalog (from client-sent prices) stay the same.
func fingerprint(currency, token string, items []Item, price func(Item) int64) string {
	parts := []string{currency, idempotency.Fingerprint(token)}
	for _, it := range items {
		parts = append(parts, fmt.Sprintf("%s|%d|%d", it.SKU, it.Quantity, price(it)))
	}
	return idempotency.Fingerprint(parts...)
}

// Create places an order for the caller and pays for it, every line priced from the catalog (see
// price). The same caller and key return the same order, never a second one; the same key with
// other items is ErrKeyReused. When the payment's outcome is unknown the order is returned with
// an ErrPaymentPending: it stays PENDING and the reconciler settles it.
//
// A new key costs no read of the orders: the order is inserted already claimed (its lease set),
// and only when the unique index reports the key taken is the stored order read. Nothing is
// written for an account that may not order (ErrUserInactive; see mayOrder).
func (s *Service) Create(ctx context.Context, caller auth.Identity, in CreateInput) (Order, error) {
	items, currency, err := price(ctx, s.store, in)
	if err != nil {
		return s.retry(ctx, caller, in, err)
	}
	sum, err := total(items)
	if err != nil {
		return s.retry(ctx, caller, in, err)
	}
	fp := fingerprint(currency, in.Token, items, func(it Item) int64 { return it.UnitPriceMinor })
	// Nothing is written unless the account may order.
	if err := s.mayOrder(ctx, caller); err != nil {
		return s.retry(ctx, caller, in, err)
	}
	now := s.now()
	o := Order{
		ID: uuid.NewString(), UserID: caller.Subject, Items: items, Currency: currency, TotalMinor: sum,
		Status: StatusPending, IdempotencyKey: in.IdempotencyKey, Fingerprint: fp, PaymentToken: in.Token,
		Revision: 1, LeaseUntil: now.Add(s.lease), CreateTime: now, UpdateTime: now,
	}
	if err := s.store.Create(ctx, o); err != nil {
		if !errors.Is(err, ErrDuplicateKey) {
			return Order{}, err
		}
		// The key was used before, or a concurrent call with it won the race: answer as it does.
		return s.retry(ctx, caller, in, err)
	}
	s.entered(o.Status)
	return s.charge(ctx, o)
}

// retry answers a Create whose key may have placed an order already: from that order, at the
// prices it was placed at even when the catalog changed since, provided the request is the same;
// with cause when there is no such order.
func (s *Service) retry(ctx context.Context, caller auth.Identity, in CreateInput, cause error) (Order, error) {
	existing, err := s.store.GetByKey(ctx, caller.Subject, in.IdempotencyKey)
	if errors.Is(err, ErrNotFound) {
		return Order{}, cause
	}
	if err != nil {
		return Order{}, err
	}
	stored := map[string]int64{}
	for _, it := range existing.Items {
		stored[it.SKU] = it.UnitPriceMinor
	}
	currency := cmp.Or(in.Currency, existing.Currency)
	fp := fingerprint(currency, in.Token, in.Items, func(it Item) int64 { return cmp.Or(it.UnitPriceMinor, stored[it.SKU]) })
	if existing.Fingerprint != fp {
		return Order{}, ErrKeyReused
	}
	return s.finish(ctx, existing)
}

// mayOrder reports whether caller's account may place an order: ErrUserInactive if not.
//
// A token that says its account was active when it was issued is taken at its word, and the
// user service is not asked: the token was issued at most one access-token lifetime ago (the user
// service's -token-ttl, 5 minutes by default), so an account suspended or deleted since can still
// order until its token expires, the window in which it keeps every other access too. It cannot
// renew the token: the suspension or deletion ended its sessions, and a token issued to a
// suspended account says so. Any other token (issued to a suspended account, which may have been
// reactivated since, or by an issuer that states no status) is checked with the user service, as
// every order was before.
func (s *Service) mayOrder(ctx context.Context, caller auth.Identity) error {
	if caller.AccountStatus == auth.AccountActive {
		return nil
	}
	active, err := s.users.Active(ctx, caller.Subject)
	if err != nil {
		return err
	}
	if !active {
		return ErrUserInactive
	}
	return nil
}

// finish settles a pending order now if nobody else is doing so.
func (s *Service) finish(ctx context.Context, o Order) (Order, error) {
	if o.Status != StatusPending {
		return o, nil
	}
	ok, err := s.claim(ctx, o.ID, StatusPending)
	if err != nil {
		return Order{}, err
	}
	if !ok {
		return o, paymentPending(o.ID, ErrBusy)
	}
	return s.charge(ctx, o)
}

func (s *Service) claim(ctx context.Context, id string, statuses ...Status) (bool, error) {
	now := s.now()
	return s.store.Claim(ctx, id, statuses, now, now.Add(s.lease))
}

// detached returns a context for writes that must happen even when the caller has gone.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}

func (s *Service) release(ctx context.Context, id string) {
	dctx, cancel := detached(ctx)
	defer cancel()
	_ = s.store.Release(dctx, id) // an unreleased claim only expires later
}

// charge asks the payment service to charge pending order o, whose claim the caller holds.
func (s *Service) charge(ctx context.Context, o Order) (Order, error) {
	p, err := s.payments.Charge(ctx, ChargeRequest{
		OrderID: o.ID, UserID: o.UserID, Currency: o.Currency, AmountMinor: o.TotalMinor,
		Token: o.PaymentToken, IdempotencyKey: chargeKey(o.ID),
	})
	if err == nil && p.Status == PaymentPending {
		err = errors.New("the payment's outcome is not known yet")
	}
	if err != nil {
		s.release(ctx, o.ID)
		return o, paymentPending(o.ID, err)
	}
	next := o
	next.PaymentID, next.PaymentToken = p.ID, ""
	switch p.Status {
	case PaymentDeclined:
		next.Status, next.FailureReason = StatusPaymentFailed, p.Reason
	case PaymentRefunded:
		// Captured, then refunded in full at the payment service before the order heard of
		// the capture: the money is back, so the order ends as FollowPayments would end it.
		next.Status = StatusCancelled
	default:
		next.Status = StatusPaid
	}
	return s.transition(ctx, o, next)
}

// transition stores next as the successor of cur.
func (s *Service) transition(ctx context.Context, cur, next Order) (Order, error) {
	next.Revision, next.UpdateTime = cur.Revision+1, s.now()
	dctx, cancel := detached(ctx)
	defer cancel()
	err := s.store.Transition(dctx, next, cur.Status)
	if errors.Is(err, ErrAlreadyChanged) {
		return s.store.Get(dctx, cur.ID)
	}
	if err != nil {
		return Order{}, err
	}
	s.entered(next.Status)
	return next, nil
}

// Get returns an order the caller may see: their own, or any for an admin.
func (s *Service) Get(ctx context.Context, caller auth.Identity, id string) (Order, error) {
	o, err := s.store.Get(ctx, id)
	if err != nil {
		return Order{}, err
	}
	if !caller.CanActFor(o.UserID) {
		return Order{}, ErrPermissionDenied
	}
	return o, nil
}

// List returns one page of the orders matching f that the caller may see, newest first, and the
// token of the next page ("" on the last). A pageToken not issued by List for f is
// paging.ErrInvalidToken.
func (s *Service) List(ctx context.Context, caller auth.Identity, f Filter, pageSize int, pageToken string) ([]Order, string, error) {
	if !caller.IsAdmin() {
		if f.UserID != "" && f.UserID != caller.Subject {
			return nil, "", ErrPermissionDenied
		}
		f.UserID = caller.Subject
	}
	return paging.List(ctx, s.pages, "ListOrders", f, pageSize, pageToken, func(after *paging.Cursor, limit int) ([]Order, error) {
		return s.store.List(ctx, f, after, limit)
	}, Order.Cursor)
}

// Cancel cancels an order the caller may act on: a pending or paid order becomes CANCELLING, its
// payment is settled and refunded, and it ends CANCELLED. When the payment service cannot finish
// that now the order is returned CANCELLING and the reconciler completes it. Cancelling a
// cancelled order returns it unchanged; a shipped or completed one is ErrNotCancellable.
func (s *Service) Cancel(ctx context.Context, caller auth.Identity, id, reason string) (Order, error) {
	o, err := s.Get(ctx, caller, id)
	if err != nil {
		return Order{}, err
	}
	switch o.Status {
	case StatusCancelled:
		return o, nil
	case StatusShipped, StatusCompleted:
		return Order{}, ErrNotCancellable
	case StatusCancelling:
		return s.compensate(ctx, o, reason)
	}
	ok, err := s.claim(ctx, o.ID, StatusPending, StatusPaid, StatusPaymentFailed)
	if err != nil {
		return Order{}, err
	}
	if !ok {
		return Order{}, ErrBusy
	}
	next := o
	next.Status = StatusCancelling
	if next, err = s.transition(ctx, o, next); err != nil {
		return Order{}, err
	}
	return s.compensate(ctx, next, reason)
}

// compensate settles and refunds the payment of cancelling order o, then marks it CANCELLED. It
// leaves o CANCELLING when the payment service cannot finish now. The payment is the order's own
// (ownPayment), never another payment made for the same order id.
func (s *Service) compensate(ctx context.Context, o Order, reason string) (Order, error) {
	ok, err := s.claim(ctx, o.ID, StatusCancelling)
	if err != nil || !ok {
		return o, err // somebody else is on it
	}
	p, found, err := s.ownPayment(ctx, o)
	if err == nil && found && p.Status == PaymentPending {
		// A charge whose outcome is unknown: settle it first (the same key never charges twice).
		p, err = s.payments.Charge(ctx, ChargeRequest{
			OrderID: o.ID, UserID: o.UserID, Currency: o.Currency, AmountMinor: o.TotalMinor,
			Token: o.PaymentToken, IdempotencyKey: chargeKey(o.ID),
		})
		if err == nil && p.Status == PaymentPending {
			err = errors.New("the payment's outcome is not known yet")
		}
	}
	if err == nil && found && (p.Status == PaymentCaptured || p.Status == PaymentPartiallyRefunded) {
		err = s.payments.Refund(ctx, p.ID, "cancel:"+o.ID, reason)
	}
	if err != nil {
		s.release(ctx, o.ID)
		return o, nil // still CANCELLING: the reconciler retries the compensation
	}
	next := o
	next.Status, next.PaymentToken = StatusCancelled, ""
	if found {
		next.PaymentID = p.ID
	}
	return s.transition(ctx, o, next)
}

// ownPayment returns order o's own payment: the one it recorded when its charge settled or,
// before that, the one the order service created under the order's charge key, if any. Another
// payment made for the same order id is never it.
func (s *Service) ownPayment(ctx context.Context, o Order) (Payment, bool, error) {
	if o.PaymentID != "" {
		p, err := s.payments.Get(ctx, o.PaymentID)
		return p, err == nil, err
	}
	return s.payments.ByKey(ctx, o.UserID, chargeKey(o.ID))
}

// FollowPayments handles, once, up to limit payment events after the position the store keeps,
// moves the position past them and reports how many it read. An order whose own payment was
// refunded in full at the payment service (an admin's RefundPayment, not the order's
// cancellation) becomes CANCELLED, with its update in the log TrackOrders streams, so that order
// and payment never disagree; a partial refund leaves the order as it is. Any replica may run it,
// and handling an event twice changes nothing. On an error the position stops before the event
// that failed, so the next pass tries it again.
func (s *Service) FollowPayments(ctx context.Context, limit int) (int, error) {
	seq, err := s.store.PaymentFeedSeq(ctx)
	if err != nil {
		return 0, err
	}
	events, err := s.payments.EventsAfter(ctx, seq, limit)
	if err != nil {
		return 0, err
	}
	handled := 0
	for _, e := range events {
		if err = s.followPayment(ctx, e.Payment); err != nil {
			break
		}
		handled++
	}
	if handled > 0 {
		dctx, cancel := detached(ctx)
		defer cancel()
		if aerr := s.store.AdvancePaymentFeed(dctx, events[handled-1].Seq); aerr != nil {
			return handled, errors.Join(err, aerr)
		}
	}
	return handled, err
}

// followPayment brings the order of payment p in line with it: see FollowPayments.
func (s *Service) followPayment(ctx context.Context, p Payment) error {
	if p.Status != PaymentRefunded || p.OrderID == "" {
		return nil
	}
	// A conditional write, retried on a lost race: a charge or a cancellation changing the order
	// meanwhile makes it read the order again and decide anew.
	for range 3 {
		o, err := s.store.Get(ctx, p.OrderID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case o.Status == StatusPaid && o.PaymentID == p.ID:
		case o.Status == StatusPending && o.PaymentID == "":
			// Its charge captured, and was refunded, before the order recorded it: only the
			// payment made under the order's own key is the order's.
			own, found, err := s.payments.ByKey(ctx, o.UserID, chargeKey(o.ID))
			if err != nil {
				return err
			}
			if !found || own.ID != p.ID {
				return nil
			}
		default:
			// Another payment than the order's; an order already being cancelled (its
			// compensation finds the payment refunded and ends it CANCELLED), cancelled, or
			// failed; or one that has shipped, which a refund does not unship.
			return nil
		}
		next := o
		next.Status, next.PaymentID, next.PaymentToken = StatusCancelled, p.ID, ""
		next.Revision, next.UpdateTime = o.Revision+1, s.now()
		dctx, cancel := detached(ctx)
		err = s.store.Transition(dctx, next, o.Status)
		cancel()
		if err == nil {
			s.entered(next.Status)
		}
		if !errors.Is(err, ErrAlreadyChanged) {
			return err
		}
	}
	return ErrBusy
}

// LastUpdateSeq returns the position of the newest update, where a new watch starts.
func (s *Service) LastUpdateSeq(ctx context.Context) (int64, error) {
	return s.store.LastUpdateSeq(ctx)
}

// Updates returns a feed of the update log, polled every interval while a stream listens: one
// per replica, shared by all its TrackOrders streams, each of which keeps the updates of the
// orders it may see and subscribed to. log gets the feed's errors.
func (s *Service) Updates(interval time.Duration, log *slog.Logger) *feed.Feed[Update] {
	return feed.New(feed.Source[Update]{
		Last: s.store.LastUpdateSeq,
		After: func(ctx context.Context, seq int64, limit int) ([]Update, error) {
			return s.store.UpdatesAfter(ctx, nil, seq, limit)
		},
		Seq: func(u Update) int64 { return u.Seq },
	}, interval, log)
}

// UpdatesAfter returns up to limit updates of orderIDs after seq; the caller must have been
// allowed to see those orders (Get).
func (s *Service) UpdatesAfter(ctx context.Context, orderIDs []string, seq int64, limit int) ([]Update, error) {
	if len(orderIDs) == 0 {
		return nil, nil
	}
	return s.store.UpdatesAfter(ctx, orderIDs, seq, limit)
}
