package interceptors_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/interceptors"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

func TestRedact(t *testing.T) {
	t.Parallel()
	req := &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: "ada"}, Password: "hunter2 and more"}
	resp := &userv1.LoginResponse{AccessToken: "eyJ.secret.token", TokenType: "Bearer", User: &userv1.User{Username: "ada"}}
	for _, m := range []proto.Message{req, resp} {
		b, err := protojson.Marshal(interceptors.Redact(m))
		if err != nil {
			t.Fatal(err)
		}
		for _, secret := range []string{"hunter2", "secret"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("redacted %T still holds %q: %s", m, secret, b)
			}
		}
		if !strings.Contains(string(b), "ada") || !strings.Contains(string(b), interceptors.Redacted) {
			t.Errorf("redaction removed too much or marked nothing: %s", b)
		}
	}
	if req.GetPassword() != "hunter2 and more" {
		t.Errorf("Redact changed its argument")
	}
}

// invoke runs a client interceptor around an invoker that returns err and records what it saw.
func invoke(ctx context.Context, c interceptors.Client, err error, seen *metadata.MD) error {
	return c.Unary(ctx, "/svc/M", nil, nil, nil, func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		if seen != nil {
			*seen, _ = metadata.FromOutgoingContext(ctx)
		}
		return err
	})
}

func TestBreaker(t *testing.T) {
	t.Parallel()
	b := interceptors.Breaker("target", interceptors.BreakerSettings{ConsecutiveFailures: 3})
	ctx := t.Context()
	// Errors the caller caused do not trip it.
	for range 5 {
		if err := invoke(ctx, b, status.Error(codes.NotFound, "no"), nil); status.Code(err) != codes.NotFound {
			t.Fatalf("NotFound passed through as %v", err)
		}
	}
	// Nor do calls the caller cancelled.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for range 5 {
		_ = invoke(cancelled, b, status.Error(codes.Canceled, "gone"), nil)
	}
	if err := invoke(ctx, b, nil, nil); err != nil {
		t.Fatalf("breaker tripped on caller errors: %v", err)
	}
	// Three failures that blame the target, among more successes (one replica of several died
	// with calls in flight on it), do not open it.
	for range 3 {
		_ = invoke(ctx, b, status.Error(codes.Unavailable, "down"), nil)
	}
	if err := invoke(ctx, b, nil, nil); err != nil {
		t.Fatalf("breaker tripped on a run of failures among more successes: %v", err)
	}
	// Failures that are the target's calls in the window open it.
	down := interceptors.Breaker("target", interceptors.BreakerSettings{ConsecutiveFailures: 3})
	_ = invoke(ctx, down, nil, nil)
	for range 3 {
		_ = invoke(ctx, down, status.Error(codes.Unavailable, "down"), nil)
	}
	called := false
	err := down.Unary(ctx, "/svc/M", nil, nil, nil, func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
		called = true
		return nil
	})
	if status.Code(err) != codes.Unavailable || called {
		t.Fatalf("open breaker: err %v, target called %v; want Unavailable without a call", err, called)
	}
}

func TestPropagate(t *testing.T) {
	t.Parallel()
	ctx := auth.NewContext(t.Context(), auth.Identity{Subject: "u1", Token: "tok"})
	ctx = interceptors.WithRequestID(ctx, "req-1")
	var seen metadata.MD
	if err := invoke(ctx, interceptors.Propagate(), nil, &seen); err != nil {
		t.Fatal(err)
	}
	if got := seen.Get("authorization"); len(got) != 1 || got[0] != "Bearer tok" {
		t.Errorf("authorization = %q", got)
	}
	if got := seen.Get(interceptors.RequestIDKey); len(got) != 1 || got[0] != "req-1" {
		t.Errorf("request id = %q", got)
	}
	// An explicit credential on the outgoing call wins.
	explicit := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer service-token")
	if err := invoke(explicit, interceptors.Propagate(), nil, &seen); err != nil {
		t.Fatal(err)
	}
	if got := seen.Get("authorization"); len(got) != 1 || got[0] != "Bearer service-token" {
		t.Errorf("authorization = %q, want the explicit one only", got)
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	var hadDeadline bool
	err := interceptors.Timeout(1e9).Unary(t.Context(), "/svc/M", nil, nil, nil, func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
		_, hadDeadline = ctx.Deadline()
		return nil
	})
	if err != nil || !hadDeadline {
		t.Errorf("a call without a deadline got none (err %v)", err)
	}
}
