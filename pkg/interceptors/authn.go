package interceptors

import (
	"context"
	"errors"
	"log/slog"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
)

// Authenticate requires a valid bearer access token ("authorization: Bearer <token>") on every
// call but those whose full method name public reports true for, and stores the caller's
// auth.Identity in the context. A missing, malformed, expired, forged or foreign-audience token
// fails with Unauthenticated; why goes to the log, not to the caller. While v holds no key yet
// (its keys are fetched and none arrived), calls fail with Unavailable, which clients retry.
func Authenticate(v *auth.Verifier, log *slog.Logger, public func(fullMethod string) bool) Server {
	authFn := func(ctx context.Context) (context.Context, error) {
		token, err := grpcauth.AuthFromMD(ctx, "bearer")
		if err != nil {
			return nil, err // already Unauthenticated, with a message fit for the caller
		}
		id, err := v.Verify(token)
		if errors.Is(err, auth.ErrNoKeys) {
			// The keys are fetched and none arrived yet: the token may well be good, so the
			// caller should retry (elsewhere), not sign in again.
			log.WarnContext(ctx, "no token keys yet", "request_id", RequestIDFromContext(ctx))
			return nil, status.Error(codes.Unavailable, "not ready to verify access tokens yet")
		}
		if err != nil {
			log.InfoContext(ctx, "rejected access token", "request_id", RequestIDFromContext(ctx), "error", err)
			return nil, status.Error(codes.Unauthenticated, auth.ErrInvalidToken.Error())
		}
		return auth.NewContext(ctx, id), nil
	}
	needsAuth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return !public(c.FullMethod())
	})
	return Server{
		Unary:  selector.UnaryServerInterceptor(grpcauth.UnaryServerInterceptor(authFn), needsAuth),
		Stream: selector.StreamServerInterceptor(grpcauth.StreamServerInterceptor(authFn), needsAuth),
	}
}

// Caller returns the authenticated identity of the call ctx belongs to, or Unauthenticated when
// there is none (a method served without Authenticate, or with authentication off).
func Caller(ctx context.Context) (auth.Identity, error) {
	id, ok := auth.FromContext(ctx)
	if !ok {
		return auth.Identity{}, status.Error(codes.Unauthenticated, "this method needs an access token")
	}
	return id, nil
}
