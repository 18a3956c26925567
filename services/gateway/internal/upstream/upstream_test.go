package upstream_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/gateway/internal/upstream"
)

// TestStatusHidesLocalFailures takes a real local failure from grpc-go (a call to a port nothing
// listens on) and statuses a service could answer: only the local one is replaced.
func TestStatusHidesLocalFailures(t *testing.T) {
	t.Parallel()
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = userv1.NewUserServiceClient(cc).GetUser(ctx, &userv1.GetUserRequest{})
	dialed := status.Convert(err)
	if dialed.Code() != codes.Unavailable || !strings.Contains(dialed.Message(), "127.0.0.1:1") {
		t.Fatalf("a call to a closed port = %v, want UNAVAILABLE naming the address", err)
	}
	for _, tt := range []struct {
		name     string
		st       *status.Status
		replaced bool
	}{
		{"grpc-go's dial failure", dialed, true},
		{"no address resolved", status.New(codes.Unavailable, "name resolver error: produced zero addresses"), true},
		{"the chassis breaker", status.New(codes.Unavailable, "circuit breaker for consul://10.0.0.2:8500/user is open: x"), true},
		{"a service's own unavailable", status.New(codes.Unavailable, "the payment's outcome is unknown; repeat the call with the same idempotency key"), false},
		{"another code", status.New(codes.NotFound, "connection error: not a local failure"), false},
	} {
		got, replaced := upstream.Status(tt.st)
		if replaced != tt.replaced {
			t.Errorf("%s: replaced = %v, want %v", tt.name, replaced, tt.replaced)
		}
		switch {
		case tt.replaced && (got.Code() != codes.Unavailable || got.Message() != upstream.Unavailable):
			t.Errorf("%s: = %v, want UNAVAILABLE %q", tt.name, got, upstream.Unavailable)
		case !tt.replaced && got != tt.st:
			t.Errorf("%s: = %v, want it unchanged", tt.name, got)
		}
	}
}
