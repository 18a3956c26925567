package payment

import (
	"context"
	"time"
)

// ChargeRequest asks a processor to authorise and capture an amount.
type ChargeRequest struct {
	// PaymentID is the processor-side idempotency key: a real processor returns the first
	// outcome for a repeated key instead of charging again.
	PaymentID string
	Token     string
	Amount    Money
	// Attempt counts the calls made for this payment, from 1.
	Attempt int
}

// Outcome is a processor's answer.
type Outcome struct {
	Approved bool
	// Failed means the processor broke down; otherwise a non-approval is a decline.
	Failed  bool
	Reason  DeclineReason
	Message string
}

// Processor authorises and captures charges. Charge returns an error only when the outcome is
// unknown (a timeout, an unreachable processor): the money may or may not have moved, and the
// payment must stay pending until a later attempt learns the truth.
type Processor interface {
	Charge(ctx context.Context, req ChargeRequest) (Outcome, error)
}

// Simulator tokens, which make the built-in processor take every path.
const (
	TokenApprove           = "tok_approve"
	TokenDecline           = "tok_decline"
	TokenInsufficientFunds = "tok_insufficient_funds"
	TokenProcessorError    = "tok_processor_error"
	// TokenTimeout hangs on the first attempt until the caller gives up, as if the network
	// lost the answer, and approves every later attempt, as a real processor does when it
	// captured the first one and replays it for the repeated key.
	TokenTimeout = "tok_timeout"
	// TokenNoAnswer hangs on every attempt until the caller gives up, as an issuer that never
	// answers (or a challenge the card holder never completes): the payment stays PENDING for
	// good. Whoever holds such a payment method can make every charge of their orders fail.
	TokenNoAnswer = "tok_no_answer"
)

// Simulator is a deterministic processor driven by the payment method token; any token not
// listed above is declined as an invalid payment method. Latency, if set, is added to every
// answer.
type Simulator struct {
	Latency time.Duration
}

var _ Processor = Simulator{}

// Charge implements Processor.
func (s Simulator) Charge(ctx context.Context, req ChargeRequest) (Outcome, error) {
	if s.Latency > 0 {
		select {
		case <-time.After(s.Latency):
		case <-ctx.Done():
			return Outcome{}, ctx.Err()
		}
	}
	switch req.Token {
	case TokenApprove:
		return Outcome{Approved: true}, nil
	case TokenDecline:
		return Outcome{Reason: DeclineCardDeclined, Message: "the card was declined"}, nil
	case TokenInsufficientFunds:
		return Outcome{Reason: DeclineInsufficientFunds, Message: "insufficient funds"}, nil
	case TokenProcessorError:
		return Outcome{Failed: true, Reason: DeclineProcessorError, Message: "the processor failed to handle the charge"}, nil
	case TokenTimeout:
		if req.Attempt <= 1 {
			<-ctx.Done()
			return Outcome{}, ctx.Err()
		}
		return Outcome{Approved: true}, nil
	case TokenNoAnswer:
		<-ctx.Done()
		return Outcome{}, ctx.Err()
	}
	return Outcome{Reason: DeclineInvalidPaymentMethod, Message: "unknown payment method token"}, nil
}
