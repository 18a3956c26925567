// Package paymenttest holds what the payment service's domain and store tests share: a payment
// processor that counts its calls, so a test can prove a charge reached the processor once.
package paymenttest

import (
	"context"
	"sync"

	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

// CountingProcessor is the simulator, counting the charges it is asked for per payment. It is
// safe for concurrent use.
type CountingProcessor struct {
	payment.Simulator
	mu    sync.Mutex
	calls map[string]int
}

// NewCountingProcessor returns a CountingProcessor over sim.
func NewCountingProcessor(sim payment.Simulator) *CountingProcessor {
	return &CountingProcessor{Simulator: sim, calls: map[string]int{}}
}

// Charge counts the call, then charges with the simulator.
func (c *CountingProcessor) Charge(ctx context.Context, req payment.ChargeRequest) (payment.Outcome, error) {
	c.mu.Lock()
	c.calls[req.PaymentID]++
	c.mu.Unlock()
	return c.Simulator.Charge(ctx, req)
}

// Calls returns how many charges of payment id the processor was asked for.
func (c *CountingProcessor) Calls(id string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}
