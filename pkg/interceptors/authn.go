package interceptors

import (
	"context"
	"errors"
	"log/slog"

	grpcauth "github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
)

// Identify finds out who is calling, and leaves deciding whether they may to the authorization
// interceptor after it (pkg/authz). It reads an optional bearer access token ("authorization:
// Bearer <token>"): a valid one sets the user fields of the caller's auth.Identity; an invalid one
// (malformed, expired, forged, for another audience) fails the call with Unauthenticated, why going
// to the log, not to the caller; none leaves the identity without a user. peerService names the
// meshmart service whose verified client certificate the connection presented, "" when none (nil
// means none ever). When the call has a user or a service, the identity is stored with
// auth.NewContext. While v holds no key yet (its keys are fetched and none arrived), a call with a
// token fails with Unavailable, which clients retry.
func Identify(v *auth.Verifier, peerService func(ctx context.Context) string, log *slog.Logger) Server {
	identify := func(ctx context.Context) (context.Context, error) {
		var id auth.Identity
		if peerService != nil {
			id.Service = peerService(ctx)
		}
		if len(metadata.ValueFromIncomingContext(ctx, "authorization")) > 0 {
			token, err := grpcauth.AuthFromMD(ctx, "bearer")
			if err != nil {
				return nil, err // already Unauthenticated, with a message fit for the caller
			}
			user, err := v.Verify(token)
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
			user.Service = id.Service
			id = user
		}
		if !id.IsUser() && !id.IsService() {
			return ctx, nil
		}
		return auth.NewContext(ctx, id), nil
	}
	return Server{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			ctx, err := identify(ctx)
			if err != nil {
				return nil, err
			}
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			ctx, err := identify(ss.Context())
			if err != nil {
				return err
			}
			return handler(srv, &identifiedStream{ServerStream: ss, ctx: ctx})
		},
	}
}

type identifiedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *identifiedStream) Context() context.Context { return s.ctx }

// Caller returns the identity of the call ctx belongs to, a user, a service or both, or
// Unauthenticated when there is neither (a public method called anonymously, or a server with
// authentication off).
func Caller(ctx context.Context) (auth.Identity, error) {
	id, ok := auth.FromContext(ctx)
	if !ok || (!id.IsUser() && !id.IsService()) {
		return auth.Identity{}, status.Error(codes.Unauthenticated, "this method needs an access token")
	}
	return id, nil
}
