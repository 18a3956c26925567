package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

// metricCharges counts the charges by the status they came to; the orders-and-payments dashboard
// shows it (deploy/observability/grafana/dashboards/meshmart-orders.json).
const metricCharges = "meshmart_payment_charges_total"

// chargeStatuses are the label values of the statuses a charge comes to.
var chargeStatuses = map[payment.Status]string{
	payment.StatusCaptured: "captured",
	payment.StatusDeclined: "declined",
	payment.StatusFailed:   "failed",
	payment.StatusPending:  "pending",
}

// chargeMetrics implements payment.Observer with a Prometheus counter.
type chargeMetrics struct{ charges *prometheus.CounterVec }

var _ payment.Observer = (*chargeMetrics)(nil)

// newChargeMetrics registers the charges' counter in reg.
func newChargeMetrics(reg prometheus.Registerer) (*chargeMetrics, error) {
	m := &chargeMetrics{charges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricCharges,
		Help: "Charges the processor answered, by the status they settled in (captured, declined, failed), or pending when its answer was unknown."},
		[]string{"status"})}
	for _, s := range chargeStatuses {
		m.charges.WithLabelValues(s) // every series exists from the start, at 0
	}
	return m, reg.Register(m.charges)
}

// Charged implements payment.Observer.
func (m *chargeMetrics) Charged(s payment.Status) {
	if name, ok := chargeStatuses[s]; ok {
		m.charges.WithLabelValues(name).Inc()
	}
}
