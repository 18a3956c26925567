package interceptors

import (
	"context"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// TraceContext puts the trace context a caller sent (read by prop, in W3C headers for the
// chassis) in the call's context, and starts no span: for a server that records no spans, so that
// the caller's trace id is still logged, used as the request id and forwarded by the chassis
// client. otelgrpc's stats handler, given a noop tracer provider, would still start a span, build
// its attributes and copy the whole incoming metadata (the caller's token with it) for its
// extractor on every call, and any stats handler makes grpc-go build an event per step of every
// call; this reads the headers the propagator asks for where grpc-go keeps them.
func TraceContext(prop propagation.TextMapPropagator) Server {
	return Server{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return handler(prop.Extract(ctx, incomingCarrier{ctx}), req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			ctx := ss.Context()
			extracted := prop.Extract(ctx, incomingCarrier{ctx})
			if extracted == ctx {
				return handler(srv, ss)
			}
			wrapped := middleware.WrapServerStream(ss)
			wrapped.WrappedContext = extracted
			return handler(srv, wrapped)
		},
	}
}

// incomingCarrier reads a call's incoming metadata for a propagator without copying all of it.
type incomingCarrier struct{ ctx context.Context }

// Get returns the first value of key (which the W3C propagators give in lowercase).
func (c incomingCarrier) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set does nothing: incoming metadata is read-only.
func (incomingCarrier) Set(string, string) {}

// Keys lists the keys of the incoming metadata; neither W3C propagator asks for them.
func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}
