package payment_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
	"github.com/meshmart/meshmart/services/payment/internal/paymenttest"
	"github.com/meshmart/meshmart/services/payment/internal/store"
)

// The payment rules, on the SQLite store. The guarantees that rest on the store's transactions
// under concurrency (one capture per key, refunds within the capture, across replicas) are
// proved on both databases in internal/store.

const orderID = "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90"

var (
	alice   = auth.Identity{Subject: "00000000-0000-4000-8000-00000000a11c", Roles: []string{auth.RoleUser}}
	bob     = auth.Identity{Subject: "00000000-0000-4000-8000-000000000b0b", Roles: []string{auth.RoleUser}}
	admin   = auth.Identity{Subject: "00000000-0000-4000-8000-0000000ad111", Roles: []string{auth.RoleAdmin}}
	nowhere = "00000000-0000-4000-8000-999999999999"
)

func usd(n int64) payment.Money { return payment.Money{Currency: "USD", Minor: n} }

func charge(token, key string) payment.ChargeInput {
	return payment.ChargeInput{OrderID: orderID, Amount: usd(1000), Token: token, IdempotencyKey: key}
}

// newService returns a payment service on a fresh SQLite store, its processor and the store.
func newService(t *testing.T, processorTimeout time.Duration) (*payment.Service, *paymenttest.CountingProcessor, *store.Payments) {
	t.Helper()
	s := testkit.OpenSQLite(t, store.Open)
	proc := paymenttest.NewCountingProcessor(payment.Simulator{})
	return payment.NewService(s, proc, processorTimeout), proc, s
}

// invalidField returns the request field an invalid-input error names, "" for other errors.
func invalidField(err error) string {
	if f, ok := fault.As(err); ok && f.Code == fault.InvalidArgument {
		return f.Field
	}
	return ""
}

func TestChargeOutcomes(t *testing.T) {
	t.Parallel()
	svc, _, _ := newService(t, 100*time.Millisecond)
	tests := []struct {
		token  string
		status payment.Status
		reason payment.DeclineReason
	}{
		{payment.TokenApprove, payment.StatusCaptured, payment.DeclineUnspecified},
		{payment.TokenDecline, payment.StatusDeclined, payment.DeclineCardDeclined},
		{payment.TokenInsufficientFunds, payment.StatusDeclined, payment.DeclineInsufficientFunds},
		{payment.TokenProcessorError, payment.StatusFailed, payment.DeclineProcessorError},
		{"tok_stolen", payment.StatusDeclined, payment.DeclineInvalidPaymentMethod},
	}
	for _, tt := range tests {
		p, err := svc.Charge(context.Background(), alice, charge(tt.token, "k-"+tt.token))
		if err != nil || p.Status != tt.status || p.DeclineReason != tt.reason || p.UserID != alice.Subject || p.Attempts != 1 {
			t.Errorf("%s: %+v, %v; want status %v reason %v", tt.token, p, err, tt.status, tt.reason)
		}
	}
	if _, err := svc.Charge(context.Background(), alice, payment.ChargeInput{OrderID: orderID, Amount: usd(0), Token: payment.TokenApprove, IdempotencyKey: "zero"}); invalidField(err) != "amount" {
		t.Errorf("charging nothing = %v, want invalid amount", err)
	}
	// Currency codes are checked against ISO 4217, beyond the contract's pattern.
	for _, cur := range []string{"XTS", "XXX", "DEM", "ABC"} {
		in := payment.ChargeInput{OrderID: orderID, Amount: payment.Money{Currency: cur, Minor: 100}, Token: payment.TokenApprove, IdempotencyKey: "cur-" + cur}
		if _, err := svc.Charge(context.Background(), alice, in); invalidField(err) != "amount.currency_code" {
			t.Errorf("charging in %s = %v, want invalid amount.currency_code", cur, err)
		}
	}
}

func TestChargeIdempotency(t *testing.T) {
	t.Parallel()
	svc, proc, _ := newService(t, time.Second)
	ctx := context.Background()
	first, err := svc.Charge(ctx, alice, charge(payment.TokenApprove, "k"))
	if err != nil {
		t.Fatal(err)
	}
	// A declined charge is a payment too: repeating it returns it, not a new attempt.
	declined, err := svc.Charge(ctx, alice, charge(payment.TokenDecline, "d"))
	if err != nil {
		t.Fatal(err)
	}
	for token, p := range map[string]payment.Payment{payment.TokenApprove: first, payment.TokenDecline: declined} {
		again, err := svc.Charge(ctx, alice, charge(token, p.IdempotencyKey))
		if err != nil || again.ID != p.ID || again.Status != p.Status || proc.Calls(p.ID) != 1 {
			t.Errorf("repeat of %s = %+v, %v with %d processor calls; want the same payment, one call", p.IdempotencyKey, again, err, proc.Calls(p.ID))
		}
	}

	// The same key with another amount, order or payment method is refused.
	for name, in := range map[string]payment.ChargeInput{
		"amount": {OrderID: orderID, Amount: usd(999), Token: payment.TokenApprove, IdempotencyKey: "k"},
		"order":  {OrderID: nowhere, Amount: usd(1000), Token: payment.TokenApprove, IdempotencyKey: "k"},
		"token":  {OrderID: orderID, Amount: usd(1000), Token: payment.TokenDecline, IdempotencyKey: "k"},
	} {
		if _, err := svc.Charge(ctx, alice, in); !errors.Is(err, payment.ErrKeyReused) {
			t.Errorf("key reused with another %s = %v, want ErrKeyReused", name, err)
		}
	}

	// Keys are scoped per caller and payer: an admin acting for alice with her key makes a payment
	// of the admin's own (issue 15: no caller can take another's key), bob has his own.
	onBehalf := charge(payment.TokenApprove, "k")
	onBehalf.UserID = alice.Subject
	if p, err := svc.Charge(ctx, admin, onBehalf); err != nil || p.ID == first.ID || p.UserID != alice.Subject {
		t.Errorf("an admin's charge for alice with her key = %+v, %v; want another payment of alice's", p, err)
	}
	if p, err := svc.Charge(ctx, bob, charge(payment.TokenApprove, "k")); err != nil || p.ID == first.ID || p.UserID != bob.Subject {
		t.Errorf("bob's charge with alice's key = %+v, %v; want his own payment", p, err)
	}
	bobForAlice := charge(payment.TokenApprove, "other")
	bobForAlice.UserID = alice.Subject
	if _, err := svc.Charge(ctx, bob, bobForAlice); !errors.Is(err, payment.ErrPermissionDenied) {
		t.Errorf("bob charging alice = %v, want ErrPermissionDenied", err)
	}
	adminForBob := charge(payment.TokenApprove, "for-bob")
	adminForBob.UserID = bob.Subject
	if p, err := svc.Charge(ctx, admin, adminForBob); err != nil || p.UserID != bob.Subject {
		t.Errorf("an admin charging bob = %+v, %v; want bob's payment", p, err)
	}
}

// When the processor's answer is unknown the payment stays PENDING, and the next call with the
// same key asks again; once settled it is never asked again.
func TestTimeoutThenRetrySettles(t *testing.T) {
	t.Parallel()
	svc, proc, _ := newService(t, 100*time.Millisecond)
	ctx := context.Background()
	first, err := svc.Charge(ctx, alice, charge(payment.TokenTimeout, "slow"))
	if err != nil || first.Status != payment.StatusPending {
		t.Fatalf("timed-out charge = %+v, %v; want PENDING", first, err)
	}
	again, err := svc.Charge(ctx, alice, charge(payment.TokenTimeout, "slow"))
	if err != nil || again.Status != payment.StatusCaptured || again.ID != first.ID || again.Attempts != 2 {
		t.Fatalf("retry = %+v, %v; want the same payment CAPTURED on attempt 2", again, err)
	}
	third, err := svc.Charge(ctx, alice, charge(payment.TokenTimeout, "slow"))
	if err != nil || third.Status != payment.StatusCaptured || proc.Calls(first.ID) != 2 {
		t.Fatalf("a settled payment asked the processor again: %d calls (%v)", proc.Calls(first.ID), err)
	}
}

// A call that finds another call holding the claim waits for its outcome; when its own context
// ends first it fails, and the processor is not asked. The failure is ErrInProgress when the
// context ends between two polls, and the context's error when it ends during a poll's read.
func TestChargeWhileAnotherCallHoldsTheClaim(t *testing.T) {
	t.Parallel()
	svc, proc, s := newService(t, 100*time.Millisecond)
	ctx := context.Background()
	p, err := svc.Charge(ctx, alice, charge(payment.TokenTimeout, "held"))
	if err != nil || p.Status != payment.StatusPending {
		t.Fatalf("timed-out charge = %+v, %v", p, err)
	}
	now := time.Now().UTC()
	if _, ok, err := s.Claim(ctx, p.ID, now, now.Add(time.Hour)); err != nil || !ok {
		t.Fatalf("claim = %v, %v", ok, err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	if _, err := svc.Charge(waitCtx, alice, charge(payment.TokenTimeout, "held")); !errors.Is(err, payment.ErrInProgress) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("charge while claimed = %v, want ErrInProgress", err)
	}
	if proc.Calls(p.ID) != 1 {
		t.Errorf("%d processor calls, want only the first", proc.Calls(p.ID))
	}
}

func TestRefundRules(t *testing.T) {
	t.Parallel()
	svc, _, _ := newService(t, time.Second)
	ctx := context.Background()
	p, err := svc.Charge(ctx, alice, charge(payment.TokenApprove, "paid"))
	if err != nil {
		t.Fatal(err)
	}
	refund := func(who auth.Identity, amount *payment.Money, key, reason string) (payment.Payment, payment.Refund, error) {
		return svc.Refund(ctx, who, payment.RefundInput{PaymentID: p.ID, Amount: amount, Reason: reason, IdempotencyKey: key})
	}
	amount := usd(300)
	after, r, err := refund(alice, &amount, "r1", "broken")
	if err != nil || after.Status != payment.StatusPartiallyRefunded || after.RefundedMinor != 300 || r.AmountMinor != 300 || r.UserID != alice.Subject {
		t.Fatalf("partial refund = %+v, %+v, %v", after, r, err)
	}
	// Repeating it refunds nothing more; the key with another amount or reason is refused.
	again, r2, err := refund(alice, &amount, "r1", "broken")
	if err != nil || r2.ID != r.ID || again.RefundedMinor != 300 {
		t.Fatalf("repeated refund = %+v, %v", again, err)
	}
	other := usd(200)
	if _, _, err := refund(alice, &other, "r1", "broken"); !errors.Is(err, payment.ErrKeyReused) {
		t.Errorf("refund key reused with another amount = %v, want ErrKeyReused", err)
	}
	if _, _, err := refund(alice, &amount, "r1", "other reason"); !errors.Is(err, payment.ErrKeyReused) {
		t.Errorf("refund key reused with another reason = %v, want ErrKeyReused", err)
	}

	eur, zero, tooMuch := payment.Money{Currency: "EUR", Minor: 1}, usd(0), usd(701)
	if _, _, err := refund(alice, &eur, "r2", ""); invalidField(err) != "amount.currency_code" {
		t.Errorf("refund in another currency = %v, want invalid amount.currency_code", err)
	}
	if _, _, err := refund(alice, &zero, "r2", ""); invalidField(err) != "amount" {
		t.Errorf("refund of nothing = %v, want invalid amount", err)
	}
	if _, _, err := refund(alice, &tooMuch, "r2", ""); !errors.Is(err, payment.ErrRefundExceeds) {
		t.Errorf("refund of more than is left = %v, want ErrRefundExceeds", err)
	}
	if _, _, err := refund(bob, nil, "r3", ""); !errors.Is(err, payment.ErrPermissionDenied) {
		t.Errorf("bob refunding alice = %v, want ErrPermissionDenied", err)
	}
	if _, _, err := svc.Refund(ctx, alice, payment.RefundInput{PaymentID: nowhere, IdempotencyKey: "r4"}); !errors.Is(err, payment.ErrNotFound) {
		t.Errorf("refunding a missing payment = %v, want ErrNotFound", err)
	}

	// An admin may refund; a full refund takes what is left, and then nothing is refundable.
	full, _, err := refund(admin, nil, "rest", "")
	if err != nil || full.Status != payment.StatusRefunded || full.RefundedMinor != 1000 || len(full.Refunds) != 2 {
		t.Fatalf("full refund = %+v, %v", full, err)
	}
	if _, _, err := refund(alice, nil, "more", ""); !errors.Is(err, payment.ErrNotRefundable) {
		t.Errorf("refunding a refunded payment = %v, want ErrNotRefundable", err)
	}
	// A repeat still returns its refund, whatever the payment's state now.
	if _, r3, err := refund(alice, &amount, "r1", "broken"); err != nil || r3.ID != r.ID {
		t.Errorf("repeat after the full refund = %+v, %v", r3, err)
	}

	for _, token := range []string{payment.TokenDecline, payment.TokenProcessorError} {
		unpaid, err := svc.Charge(ctx, alice, charge(token, token))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := svc.Refund(ctx, alice, payment.RefundInput{PaymentID: unpaid.ID, IdempotencyKey: "d-" + token}); !errors.Is(err, payment.ErrNotRefundable) {
			t.Errorf("refunding a %v payment = %v, want ErrNotRefundable", unpaid.Status, err)
		}
	}
}

func TestWhoMaySeeWhat(t *testing.T) {
	t.Parallel()
	svc, _, _ := newService(t, time.Second)
	ctx := context.Background()
	p, err := svc.Charge(ctx, alice, charge(payment.TokenApprove, "k"))
	if err != nil {
		t.Fatal(err)
	}
	for who, want := range map[string]error{"alice": nil, "admin": nil, "bob": payment.ErrPermissionDenied} {
		caller := map[string]auth.Identity{"alice": alice, "admin": admin, "bob": bob}[who]
		if got, err := svc.Get(ctx, caller, p.ID); !errors.Is(err, want) || (err == nil && got.ID != p.ID) {
			t.Errorf("%s Get = %+v, %v; want %v", who, got, err, want)
		}
	}
	if _, err := svc.Get(ctx, alice, nowhere); !errors.Is(err, payment.ErrNotFound) {
		t.Errorf("Get missing = %v, want ErrNotFound", err)
	}
	if _, _, err := svc.List(ctx, alice, payment.Filter{UserID: bob.Subject}, 10, ""); !errors.Is(err, payment.ErrPermissionDenied) {
		t.Errorf("alice listing bob = %v, want ErrPermissionDenied", err)
	}
	if err := svc.Watch(ctx, alice, payment.Filter{UserID: bob.Subject}, svc.EventFeed(time.Second, testkit.DiscardLogger()), nil); !errors.Is(err, payment.ErrPermissionDenied) {
		t.Errorf("alice watching bob = %v, want ErrPermissionDenied", err)
	}
}
