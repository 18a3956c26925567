package grpcapi

import (
	"context"
	"log/slog"

	"github.com/meshmart/meshmart/pkg/grpcerr"
)

// toStatus maps err for the client with grpcerr.ToStatus, the one place errors become statuses;
// it only names the database that an Unavailable message speaks of.
func toStatus(ctx context.Context, log *slog.Logger, err error) error {
	return grpcerr.ToStatus(ctx, log, "the user database", err)
}
