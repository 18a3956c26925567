package server

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"

	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/observability"
)

// Tracing returns the server options that trace calls with tp, continuing the W3C trace context
// a caller sent (observability.Propagator); give them before the interceptor chain's, so that the
// chain sees the trace. A noop.TracerProvider starts no span at all: interceptors.TraceContext
// only puts the caller's trace context in the call's context, so that its trace id is logged and
// forwarded.
func Tracing(tp trace.TracerProvider) []grpc.ServerOption {
	if _, ok := tp.(noop.TracerProvider); ok {
		return interceptors.ServerChain(interceptors.TraceContext(observability.Propagator()))
	}
	return []grpc.ServerOption{grpc.StatsHandler(otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(tp),
		otelgrpc.WithPropagators(observability.Propagator()),
	))}
}
