package main

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshmart/meshmart/services/order/internal/order"
)

// The reconciler's metrics; deploy/observability/prometheus/alerts.yml alerts on them (TestAlertRules checks that
// every metric it names is one of these or the chassis').
const (
	metricUnsettled = "meshmart_order_unsettled_orders"
	metricAttempts  = "meshmart_order_reconcile_attempts_total"
	metricGivenUp   = "meshmart_order_given_up_total"
)

// reconcileMetrics implements order.Observer with Prometheus metrics.
type reconcileMetrics struct {
	unsettled *prometheus.GaugeVec
	attempts  *prometheus.CounterVec
	givenUp   prometheus.Counter
}

var _ order.Observer = (*reconcileMetrics)(nil)

// newReconcileMetrics registers the reconciler's metrics in reg.
func newReconcileMetrics(reg prometheus.Registerer) (*reconcileMetrics, error) {
	m := &reconcileMetrics{
		unsettled: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: metricUnsettled,
			Help: "Orders PENDING or CANCELLING created more than older_than seconds ago, as of the last reconciler pass " +
				"(every replica reports the whole database)."}, []string{"older_than"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricAttempts,
			Help: "The reconciler's attempts at unsettled orders, by outcome: settled, failed (backed off), given_up."}, []string{"outcome"}),
		givenUp: prometheus.NewCounter(prometheus.CounterOpts{Name: metricGivenUp,
			Help: "Pending orders the reconciler gave up (dead-lettered) after their last allowed attempt."}),
	}
	for _, out := range []order.Outcome{order.OutcomeSettled, order.OutcomeFailed, order.OutcomeGivenUp} {
		m.attempts.WithLabelValues(string(out)) // every series exists from the start, at 0
	}
	for _, c := range []prometheus.Collector{m.unsettled, m.attempts, m.givenUp} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// Attempted implements order.Observer.
func (m *reconcileMetrics) Attempted(out order.Outcome) {
	m.attempts.WithLabelValues(string(out)).Inc()
	if out == order.OutcomeGivenUp {
		m.givenUp.Inc()
	}
}

// Unsettled implements order.Observer.
func (m *reconcileMetrics) Unsettled(counts []int64) {
	for i, age := range order.UnsettledAges {
		m.unsettled.WithLabelValues(strconv.FormatFloat(age.Seconds(), 'f', -1, 64)).Set(float64(counts[i]))
	}
}
