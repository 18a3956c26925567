// Package grpcerr holds what every service's error mapping shares: the status for a bad field,
// and the fallback for errors no domain rule claimed (cancellation, an unreachable database,
// bugs). Each service maps its own domain errors first, in one place, then calls Fallback.
package grpcerr

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/sqldb"
)

// InvalidArgument returns an InvalidArgument status with msg and a BadRequest naming field.
func InvalidArgument(field, reason, msg string) error {
	st := status.New(codes.InvalidArgument, msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: reason}},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// Fallback maps an error no domain rule claimed: nil stays nil, a status passes through,
// cancellation and deadlines keep their codes, an unreachable database is Unavailable (what is a
// database is told by what), and anything else is Internal, with the cause logged and never
// shown to the caller.
func Fallback(ctx context.Context, log *slog.Logger, what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	rid := interceptors.RequestIDFromContext(ctx)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case sqldb.Unavailable(err):
		log.WarnContext(ctx, what+" unavailable", "request_id", rid, "error", err)
		return status.Error(codes.Unavailable, what+" is unavailable; retry later")
	default:
		log.ErrorContext(ctx, "internal error", "request_id", rid, "error", err)
		return status.Error(codes.Internal, "internal error")
	}
}
