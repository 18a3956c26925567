package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

// TestStatusEnteredMetric: every status has its series from the start, and each entry counts once.
func TestStatusEnteredMetric(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := newReconcileMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(m.entered, metricEntered); n != len(statusLabels) {
		t.Errorf("%d series of %s before any order, want one per status (%d)", n, metricEntered, len(statusLabels))
	}
	m.Entered(order.StatusPaid)
	m.Entered(order.StatusPaid)
	m.Entered(order.StatusCancelled)
	m.Entered(order.StatusUnspecified) // not a status an order enters: no series
	for status, want := range map[string]float64{"paid": 2, "cancelled": 1, "pending": 0} {
		if got := testutil.ToFloat64(m.entered.WithLabelValues(status)); got != want {
			t.Errorf("%s{status=%q} = %v, want %v", metricEntered, status, got, want)
		}
	}
	if n := testutil.CollectAndCount(m.entered, metricEntered); n != len(statusLabels) {
		t.Errorf("%d series of %s, want %d", n, metricEntered, len(statusLabels))
	}
}
