package payment_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

func TestSimulator(t *testing.T) {
	t.Parallel()
	sim := payment.Simulator{}
	tests := []struct {
		token   string
		attempt int
		want    payment.Outcome
		unknown bool
	}{
		{payment.TokenApprove, 1, payment.Outcome{Approved: true}, false},
		{payment.TokenDecline, 1, payment.Outcome{Reason: payment.DeclineCardDeclined}, false},
		{payment.TokenInsufficientFunds, 1, payment.Outcome{Reason: payment.DeclineInsufficientFunds}, false},
		{payment.TokenProcessorError, 1, payment.Outcome{Failed: true, Reason: payment.DeclineProcessorError}, false},
		{"tok_unknown", 1, payment.Outcome{Reason: payment.DeclineInvalidPaymentMethod}, false},
		{payment.TokenTimeout, 1, payment.Outcome{}, true},
		{payment.TokenTimeout, 2, payment.Outcome{Approved: true}, false},
		{payment.TokenNoAnswer, 1, payment.Outcome{}, true},
		{payment.TokenNoAnswer, 5, payment.Outcome{}, true},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		got, err := sim.Charge(ctx, payment.ChargeRequest{Token: tt.token, Attempt: tt.attempt})
		cancel()
		if tt.unknown {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("%s attempt %d: err %v, want the deadline", tt.token, tt.attempt, err)
			}
			continue
		}
		got.Message = ""
		if err != nil || got != tt.want {
			t.Errorf("%s attempt %d = %+v, %v; want %+v", tt.token, tt.attempt, got, err, tt.want)
		}
	}
}
