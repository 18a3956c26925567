// Package interceptors holds the chassis' gRPC interceptors, server and client side.
//
// Each server interceptor comes as a Server pair, its unary and stream forms together, so that a
// chain is written once and applied to both kinds of RPC by ServerChain. Where
// go-grpc-middleware v2 has an interceptor it is used; what it lacks (request ids, the default
// deadline, per-client rate-limit keys, BadRequest validation errors, payload redaction, the
// circuit breaker glue, trace context without spans, a metrics reporter that resolves its series
// once per method) is written here, each with a comment saying why, and so is the server's
// per-call log line, whose cost below the log level must be nil.
package interceptors

import "google.golang.org/grpc"

// Server is one server interceptor in its unary and stream forms. A nil form leaves that kind of
// RPC alone: ServerChain skips it, so that it costs no call.
type Server struct {
	Unary  grpc.UnaryServerInterceptor
	Stream grpc.StreamServerInterceptor
}

// ServerChain returns the server options applying chain in order: the first element is the
// outermost, seeing every call first and its result last. Nil forms are skipped.
func ServerChain(chain ...Server) []grpc.ServerOption {
	unary := make([]grpc.UnaryServerInterceptor, 0, len(chain))
	stream := make([]grpc.StreamServerInterceptor, 0, len(chain))
	for _, s := range chain {
		// grpc-go's chain allocates a closure per interceptor per call: one that passes every
		// call through is left out.
		if s.Unary != nil {
			unary = append(unary, s.Unary)
		}
		if s.Stream != nil {
			stream = append(stream, s.Stream)
		}
	}
	return []grpc.ServerOption{grpc.ChainUnaryInterceptor(unary...), grpc.ChainStreamInterceptor(stream...)}
}

// Client is one client interceptor in its unary and stream forms.
type Client struct {
	Unary  grpc.UnaryClientInterceptor
	Stream grpc.StreamClientInterceptor
}

// ClientChain returns the dial options applying chain in order: the first element is the
// outermost.
func ClientChain(chain ...Client) []grpc.DialOption {
	unary := make([]grpc.UnaryClientInterceptor, 0, len(chain))
	stream := make([]grpc.StreamClientInterceptor, 0, len(chain))
	for _, c := range chain {
		unary = append(unary, c.Unary)
		stream = append(stream, c.Stream)
	}
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(unary...), grpc.WithChainStreamInterceptor(stream...)}
}
