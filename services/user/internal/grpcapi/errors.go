package grpcapi

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/grpcerr"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// toStatus is the one place domain errors become gRPC statuses; what is not a domain error goes
// to grpcerr.Fallback. Messages are for clients; the cause of an Internal error goes to the log
// only.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	var (
		conflict *user.ConflictError
		invalid  *user.InvalidError
	)
	switch {
	case errors.Is(err, user.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, user.ErrBadCredentials):
		return status.Error(codes.Unauthenticated, err.Error())
	case errors.Is(err, user.ErrPermissionDenied):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, user.ErrStale):
		return status.Error(codes.Aborted, err.Error())
	case errors.As(err, &conflict):
		return status.Error(codes.AlreadyExists, conflict.Error())
	case errors.As(err, &invalid):
		return grpcerr.InvalidArgument(invalid.Field, invalid.Reason, invalid.Error())
	}
	return grpcerr.ToStatus(ctx, log, "the user database", err) // a *fault.Error such as paging.ErrInvalidToken, or Fallback
}
