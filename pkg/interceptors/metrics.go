package interceptors

import (
	"context"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// Metrics are gRPC's call metrics, server or client side: the series of go-grpc-middleware's
// providers/prometheus with its handling-time histogram (grpc_server_started_total,
// grpc_server_handled_total, grpc_server_msg_received_total, grpc_server_msg_sent_total and
// grpc_server_handling_seconds, or grpc_client_*), with its names, labels, help and buckets, so
// that the dashboards and alerts written for it read them unchanged. The calls are timed and
// reported by go-grpc-middleware's own interceptors; Metrics is their Reporter.
//
// Written here rather than taken from providers/prometheus because that provider resolves every
// series of a call from its label values on every call: five label hashes and map lookups under
// a lock, the provider's options re-applied, and a reporter allocated, which made it the largest
// cost left in the server's chain for callers that send a deadline (BENCHMARKS.md, "Metrics"). Metrics resolves a method's
// series once and keeps them, so a call costs a map read and the increments. TestMetricsAsProvider
// checks that it exports exactly what the provider does for the same calls.
type Metrics struct {
	started, handled, received, sent *prometheus.CounterVec
	handling                         *prometheus.HistogramVec

	// methods maps a method to its series. It is copied on write (a method's first call, or
	// InitializeMetrics) and read without a lock on every call.
	methods atomic.Pointer[map[methodKey]*methodMetrics]
	mu      sync.Mutex // serializes writers of methods
}

type methodKey struct {
	typ             interceptors.GRPCType
	service, method string
}

// NewServerMetrics returns the server's metrics (grpc_server_*). Register them in a registry,
// and serve them with Server; InitializeMetrics exports a registered service's series at zero.
func NewServerMetrics() *Metrics {
	return newMetrics("grpc_server_",
		"Total number of RPCs started on the server.",
		"Total number of RPCs completed on the server, regardless of success or failure.",
		"Total number of RPC stream messages received on the server.",
		"Total number of gRPC stream messages sent by the server.",
		"Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.")
}

// NewClientMetrics returns a client's metrics (grpc_client_*). Register them in a registry, and
// apply them with Client.
func NewClientMetrics() *Metrics {
	return newMetrics("grpc_client_",
		"Total number of RPCs started on the client.",
		"Total number of RPCs completed by the client, regardless of success or failure.",
		"Total number of RPC stream messages received by the client.",
		"Total number of gRPC stream messages sent by the client.",
		"Histogram of response latency (seconds) of the gRPC until it is finished by the application.")
}

func newMetrics(prefix, started, handled, received, sent, handling string) *Metrics {
	labels := []string{"grpc_type", "grpc_service", "grpc_method"}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: prefix + name, Help: help}, labels)
	}
	m := &Metrics{
		started:  counter("started_total", started, labels...),
		handled:  counter("handled_total", handled, append(labels, "grpc_code")...),
		received: counter("msg_received_total", received, labels...),
		sent:     counter("msg_sent_total", sent, labels...),
		handling: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: prefix + "handling_seconds", Help: handling,
			Buckets: prometheus.DefBuckets}, labels),
	}
	m.methods.Store(&map[methodKey]*methodMetrics{})
	return m
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.started.Describe(ch)
	m.handled.Describe(ch)
	m.received.Describe(ch)
	m.sent.Describe(ch)
	m.handling.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.started.Collect(ch)
	m.handled.Collect(ch)
	m.received.Collect(ch)
	m.sent.Collect(ch)
	m.handling.Collect(ch)
}

// Server is the server interceptor reporting to m.
func (m *Metrics) Server() Server {
	return Server{Unary: interceptors.UnaryServerInterceptor(m), Stream: interceptors.StreamServerInterceptor(m)}
}

// Client is the client interceptor reporting to m.
func (m *Metrics) Client() Client {
	return Client{Unary: interceptors.UnaryClientInterceptor(m), Stream: interceptors.StreamClientInterceptor(m)}
}

// InitializeMetrics exports the series of every method server serves at zero, those of every
// code included, as the provider's InitializeMetrics does.
func (m *Metrics) InitializeMetrics(server reflection.ServiceInfoProvider) {
	for service, info := range server.GetServiceInfo() {
		for _, method := range info.Methods {
			s := m.series(methodKey{typ: methodType(method), service: service, method: method.Name})
			for c := range codes.Code(numCodes) {
				s.handledCounter(c)
			}
		}
	}
}

func methodType(m grpc.MethodInfo) interceptors.GRPCType {
	switch {
	case m.IsClientStream && m.IsServerStream:
		return interceptors.BidiStream
	case m.IsClientStream:
		return interceptors.ClientStream
	case m.IsServerStream:
		return interceptors.ServerStream
	}
	return interceptors.Unary
}

// ServerReporter implements go-grpc-middleware's interceptors.ServerReportable.
func (m *Metrics) ServerReporter(ctx context.Context, meta interceptors.CallMeta) (interceptors.Reporter, context.Context) {
	return m.reporter(meta), ctx
}

// ClientReporter implements go-grpc-middleware's interceptors.ClientReportable.
func (m *Metrics) ClientReporter(ctx context.Context, meta interceptors.CallMeta) (interceptors.Reporter, context.Context) {
	return m.reporter(meta), ctx
}

func (m *Metrics) reporter(meta interceptors.CallMeta) *methodMetrics {
	s := m.series(methodKey{typ: meta.Typ, service: meta.Service, method: meta.Method})
	s.started.Inc()
	return s
}

// series returns the series of method k, resolving them on its first call.
func (m *Metrics) series(k methodKey) *methodMetrics {
	if s, ok := (*m.methods.Load())[k]; ok {
		return s
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	methods := *m.methods.Load()
	if s, ok := methods[k]; ok {
		return s
	}
	labels := []string{string(k.typ), k.service, k.method}
	s := &methodMetrics{
		handledVec: m.handled,
		labels:     labels,
		started:    m.started.WithLabelValues(labels...),
		received:   m.received.WithLabelValues(labels...),
		sent:       m.sent.WithLabelValues(labels...),
		handling:   m.handling.WithLabelValues(labels...),
	}
	next := maps.Clone(methods)
	next[k] = s
	m.methods.Store(&next)
	return s
}

// methodMetrics are one method's series, and the Reporter of each of its calls: a call needs no
// state of its own to report.
type methodMetrics struct {
	handledVec              *prometheus.CounterVec // handled's series are resolved from it
	labels                  []string
	started, received, sent prometheus.Counter
	handling                prometheus.Observer
	handled                 [numCodes]atomic.Pointer[prometheus.Counter] // by code, resolved on first use
}

// numCodes is the number of gRPC's codes, OK (0) to Unauthenticated (16).
const numCodes = int(codes.Unauthenticated) + 1

// PostCall implements interceptors.Reporter.
func (s *methodMetrics) PostCall(err error, d time.Duration) {
	s.handledCounter(code(err)).Inc()
	s.handling.Observe(d.Seconds())
}

// code is err's gRPC code, context errors counted as the server answers them (Canceled,
// DeadlineExceeded), as the provider does.
func code(err error) codes.Code {
	st, ok := status.FromError(err)
	if !ok {
		st = status.FromContextError(err)
	}
	return st.Code()
}

// handledCounter is the series of calls that ended with code c, resolved on the first.
func (s *methodMetrics) handledCounter(c codes.Code) prometheus.Counter {
	known := int(c) < numCodes
	if known {
		if p := s.handled[c].Load(); p != nil {
			return *p
		}
	}
	counter := s.handledVec.WithLabelValues(append(slices.Clip(s.labels), c.String())...)
	if known {
		s.handled[c].Store(&counter)
	}
	return counter
}

// PostMsgSend implements interceptors.Reporter.
func (s *methodMetrics) PostMsgSend(_ any, err error, _ time.Duration) {
	if err == nil {
		s.sent.Inc()
	}
}

// PostMsgReceive implements interceptors.Reporter.
func (s *methodMetrics) PostMsgReceive(_ any, err error, _ time.Duration) {
	if err == nil {
		s.received.Inc()
	}
}
