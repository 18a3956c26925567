package interceptors

import (
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
)

// Propagate forwards the caller's credentials and request id on outgoing calls made while serving
// a request, so that the downstream service authorises the same user and logs the same request
// id. Values the outgoing context already carries win.
func Propagate() Client {
	return Client{
		Unary: func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(propagate(ctx), method, req, reply, cc, opts...)
		},
		Stream: func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(propagate(ctx), desc, cc, method, opts...)
		},
	}
}

func propagate(ctx context.Context) context.Context {
	out, _ := metadata.FromOutgoingContext(ctx)
	var kv []string
	if id, ok := auth.FromContext(ctx); ok && id.Token != "" && len(out.Get("authorization")) == 0 {
		kv = append(kv, "authorization", "Bearer "+id.Token)
	}
	if rid := RequestIDFromContext(ctx); rid != "" && len(out.Get(RequestIDKey)) == 0 {
		kv = append(kv, RequestIDKey, rid)
	}
	if len(kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// Timeout gives an outgoing unary call without a deadline one of d. A call made while serving a
// request inherits that request's deadline through its context, so a deadline always shrinks
// along a chain of calls and never grows. Streams are left alone, as in DefaultDeadline.
func Timeout(d time.Duration) Client {
	return Client{
		Unary: func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if _, ok := ctx.Deadline(); !ok && d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		},
		Stream: func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(ctx, desc, cc, method, opts...)
		},
	}
}

// BreakerSettings tunes a circuit breaker. The zero value is usable: it trips after 5 consecutive
// failures that are also at least half of the calls of the last 2 seconds, stays open for 5
// seconds, then lets 1 probe call through.
type BreakerSettings struct {
	// ConsecutiveFailures trips the breaker when they are also at least half of the calls in
	// Window; 0 means 5.
	ConsecutiveFailures uint32
	// Window is the rolling window whose calls the failures are weighed against; 0 means 2s.
	Window time.Duration
	// OpenTimeout is how long the breaker stays open before probing; 0 means 5s.
	OpenTimeout time.Duration
	// OnStateChange, if set, is told of every transition.
	OnStateChange func(name string, from, to gobreaker.State)
}

// Breaker guards one target with a circuit breaker: after a run of failures that say the target is
// unwell (Unavailable, DeadlineExceeded, Internal, Unknown, DataLoss), when they are also at least
// half of the target's recent calls, calls fail at once with Unavailable until a probe succeeds. Errors the caller caused, such as NotFound or
// InvalidArgument, and calls the caller cancelled count as successes. It sits outside gRPC's
// retries, so one logical call is one sample however many attempts it took.
func Breaker(name string, s BreakerSettings) Client {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = 5
	}
	if s.OpenTimeout == 0 {
		s.OpenTimeout = 5 * time.Second
	}
	if s.Window == 0 {
		s.Window = 2 * time.Second
	}
	cb := gobreaker.NewCircuitBreaker[any](gobreaker.Settings{
		Name:        name,
		MaxRequests: 1,
		Timeout:     s.OpenTimeout,
		// A run of failures alone would trip on one replica's death: the calls in flight on it fail
		// together (a non-idempotent call is not retried elsewhere), while the other replicas
		// answer. Weighed against the window's calls, such a run stays a minority; a target that
		// is down fails most calls within a second.
		Interval:     s.Window,
		BucketPeriod: s.Window / 10,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			return c.ConsecutiveFailures >= s.ConsecutiveFailures && 2*uint64(c.TotalFailures) >= uint64(c.Requests)
		},
		IsSuccessful: func(err error) bool {
			switch status.Code(err) {
			case codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.DataLoss:
				return false
			}
			return true
		},
		OnStateChange: s.OnStateChange,
	})
	open := func(err error) error {
		if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
			return status.Errorf(codes.Unavailable, "circuit breaker for %s is open: %v", name, err)
		}
		return err
	}
	return Client{
		Unary: func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			var callErr error
			_, err := cb.Execute(func() (any, error) {
				callErr = invoker(ctx, method, req, reply, cc, opts...)
				if errors.Is(ctx.Err(), context.Canceled) {
					return nil, nil // the caller gave up: not the target's fault
				}
				return nil, callErr
			})
			if err != nil {
				return open(err) // callErr itself, or the breaker refusing the call
			}
			return callErr
		},
		Stream: func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			cs, err := cb.Execute(func() (any, error) { return streamer(ctx, desc, cc, method, opts...) })
			if err != nil {
				return nil, open(err)
			}
			return cs.(grpc.ClientStream), nil
		},
	}
}
