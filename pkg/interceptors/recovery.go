package interceptors

import (
	"context"
	"log/slog"
	"runtime/debug"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Recovery turns a panic in a handler into an Internal error for that call alone, logging the
// panic value and stack; the process lives on. The caller learns nothing of the panic's content.
func Recovery(log *slog.Logger) Server {
	opt := recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", p, "request_id", RequestIDFromContext(ctx),
			"stack", string(debug.Stack()))
		return status.Error(codes.Internal, "internal error")
	})
	return Server{
		Unary:  recovery.UnaryServerInterceptor(opt),
		Stream: recovery.StreamServerInterceptor(opt),
	}
}
