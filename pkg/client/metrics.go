package client

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// metrics are the client metrics of every Dial that shares one registry.
type metrics struct {
	calls        *interceptors.Metrics
	retries      *prometheus.CounterVec
	hedges       *prometheus.CounterVec
	breakerState *prometheus.GaugeVec
	transitions  *prometheus.CounterVec
}

// registerMetrics registers the client metrics in reg, or returns the ones a Dial registered
// there before: a service dials each of its targets with the one registry it serves.
func registerMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		calls: interceptors.NewClientMetrics(),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmart_client_retries_total",
			Help: "Attempts gRPC made again under the retry policy (idempotent methods, UNAVAILABLE only), by called service."},
			[]string{"peer_service"}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmart_client_hedges_total",
			Help: "Second attempts sent to another replica because a call without side effects had not answered within its method's usual latency, by called service."},
			[]string{"peer_service"}),
		breakerState: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "meshmart_client_breaker_state",
			Help: "The circuit breaker of each called service: 0 closed, 1 half-open (probing), 2 open (calls fail at once)."},
			[]string{"peer_service"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meshmart_client_breaker_transitions_total",
			Help: "Transitions of each called service's circuit breaker, by the state entered (closed, half-open, open)."},
			[]string{"peer_service", "state"}),
	}
	var err error
	if m.calls, err = shared(reg, m.calls); err != nil {
		return nil, err
	}
	if m.retries, err = shared(reg, m.retries); err != nil {
		return nil, err
	}
	if m.hedges, err = shared(reg, m.hedges); err != nil {
		return nil, err
	}
	if m.breakerState, err = shared(reg, m.breakerState); err != nil {
		return nil, err
	}
	if m.transitions, err = shared(reg, m.transitions); err != nil {
		return nil, err
	}
	return m, nil
}

// shared registers c in reg, or returns the collector of the same metrics registered there already.
func shared[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("register client metrics: %w", err)
	}
	return c, nil
}

// observeBreaker returns the breaker's OnStateChange: it keeps peer's breaker metrics, starting
// closed, and then tells next, if any.
func (m *metrics) observeBreaker(peer string, next func(name string, from, to gobreaker.State)) func(string, gobreaker.State, gobreaker.State) {
	m.breakerState.WithLabelValues(peer).Set(float64(gobreaker.StateClosed))
	for _, s := range []gobreaker.State{gobreaker.StateClosed, gobreaker.StateHalfOpen, gobreaker.StateOpen} {
		m.transitions.WithLabelValues(peer, s.String()) // every series exists from the start, at 0
	}
	return func(name string, from, to gobreaker.State) {
		m.breakerState.WithLabelValues(peer).Set(float64(to))
		m.transitions.WithLabelValues(peer, to.String()).Inc()
		if next != nil {
			next(name, from, to)
		}
	}
}

// retryCounter counts the attempts gRPC makes beyond the first of each call to one service.
// gRPC retries inside the call, below every interceptor, and reports no retry to them; its stats
// handlers, though, see every attempt. So an interceptor (mark) gives each call a counter in its
// context, and the stats handler, told of each attempt with that context, counts it. gRPC's own
// OpenTelemetry metrics count retries too, but this project exports Prometheus metrics.
type retryCounter struct{ retries prometheus.Counter }

func (m *metrics) retryCounter(peer string) *retryCounter {
	return &retryCounter{retries: m.retries.WithLabelValues(peer)} // exists from the start, at 0
}

// attemptsKey is the context key of a call's attempt count.
type attemptsKey struct{}

// mark is the interceptor that gives each call its attempt count.
func (r *retryCounter) mark() interceptors.Client {
	return interceptors.Client{
		Unary: func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(context.WithValue(ctx, attemptsKey{}, new(atomic.Int32)), method, req, reply, cc, opts...)
		},
		Stream: func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(context.WithValue(ctx, attemptsKey{}, new(atomic.Int32)), desc, cc, method, opts...)
		},
	}
}

// TagRPC implements stats.Handler: gRPC calls it once per attempt, with the call's context.
func (r *retryCounter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	if n, ok := ctx.Value(attemptsKey{}).(*atomic.Int32); ok && n.Add(1) > 1 {
		r.retries.Inc()
	}
	return ctx
}

// HandleRPC implements stats.Handler.
func (r *retryCounter) HandleRPC(context.Context, stats.RPCStats) {}

// TagConn implements stats.Handler.
func (r *retryCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (r *retryCounter) HandleConn(context.Context, stats.ConnStats) {}
