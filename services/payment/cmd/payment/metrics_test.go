package main

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
	"github.com/meshmart/meshmart/services/payment/internal/store"
)

// TestChargeMetrics charges through the service with the metrics as its observer: each charge
// moves the counter of the status it came to, and a repeated idempotency key moves none.
func TestChargeMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := newChargeMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	svc := payment.NewService(testkit.OpenSQLite(t, store.Open), payment.Simulator{}, time.Second, payment.WithObserver(m))
	payer := auth.Identity{Subject: "00000000-0000-4000-8000-00000000a11c", Roles: []string{auth.RoleUser}}
	for i, token := range []string{payment.TokenApprove, payment.TokenApprove, payment.TokenDecline, payment.TokenProcessorError} {
		key := token
		if i == 1 {
			key = payment.TokenApprove // the same key again: the first payment, not a second charge
		}
		in := payment.ChargeInput{OrderID: "00000000-0000-4000-8000-0000000000d1", Amount: payment.Money{Currency: "USD", Minor: 1000},
			Token: token, IdempotencyKey: key}
		if _, err := svc.Charge(t.Context(), payer, in); err != nil {
			t.Fatalf("charge %s: %v", token, err)
		}
	}
	for status, want := range map[string]float64{"captured": 1, "declined": 1, "failed": 1, "pending": 0} {
		if got := testutil.ToFloat64(m.charges.WithLabelValues(status)); got != want {
			t.Errorf("%s{status=%q} = %v, want %v", metricCharges, status, got, want)
		}
	}
}
