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
	metricEntered   = "meshmart_order_status_entered_total"
)

// statusLabels name each status an order can enter, as the status label of metricEntered.
var statusLabels = map[order.Status]string{
	order.StatusPending: "pending", order.StatusPaid: "paid", order.StatusPaymentFailed: "payment_failed",
	order.StatusCancelling: "cancelling", order.StatusCancelled: "cancelled",
	order.StatusShipped: "shipped", order.StatusCompleted: "completed",
}

// reconcileMetrics implements order.Observer and order.StatusObserver with Prometheus metrics.
type reconcileMetrics struct {
	unsettled *prometheus.GaugeVec
	attempts  *prometheus.CounterVec
	givenUp   prometheus.Counter
	entered   *prometheus.CounterVec
}

var (
	_ order.Observer       = (*reconcileMetrics)(nil)
	_ order.StatusObserver = (*reconcileMetrics)(nil)
)

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
		// A counter of entries rather than a gauge of orders per status: a gauge would need a
		// count over the whole orders table, every scrape.
		entered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricEntered,
			Help: "Orders that entered each status, counted by the replica that stored the change " +
				"(sum over the replicas; a rate is orders per second entering the status)."}, []string{"status"}),
	}
	for _, name := range statusLabels {
		m.entered.WithLabelValues(name)
	}
	for _, out := range []order.Outcome{order.OutcomeSettled, order.OutcomeFailed, order.OutcomeGivenUp} {
		m.attempts.WithLabelValues(string(out)) // every series exists from the start, at 0
	}
	for _, c := range []prometheus.Collector{m.unsettled, m.attempts, m.givenUp, m.entered} {
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

// Entered implements order.StatusObserver.
func (m *reconcileMetrics) Entered(st order.Status) {
	if name, ok := statusLabels[st]; ok {
		m.entered.WithLabelValues(name).Inc()
	}
}
