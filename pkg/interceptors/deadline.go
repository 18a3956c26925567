package interceptors

import (
	"context"
	"time"

	"google.golang.org/grpc"
)

// DefaultDeadline gives a unary call that arrived without a deadline one of d, so that no request
// can hold server resources forever. Streams are left alone: a watch or tracking stream is meant to
// stay open, and ends on cancel or shutdown instead. A d of zero or less disables it.
// go-grpc-middleware's timeout interceptor is client-side only.
func DefaultDeadline(d time.Duration) Server {
	return Server{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if _, ok := ctx.Deadline(); !ok && d > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, d)
				defer cancel()
			}
			return handler(ctx, req)
		},
	}
}
