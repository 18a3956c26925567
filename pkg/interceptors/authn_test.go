package interceptors_test

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/testkit"
)

// TestIdentify covers identification alone: a token is optional, but a bad one is refused; the
// peer's service is added to whatever the token says; no identity is stored for nobody.
func TestIdentify(t *testing.T) {
	t.Parallel()
	keys := testkit.NewKeys(t)
	v := keys.Verifier(t)
	const peerKey = "x-test-peer"
	peer := func(ctx context.Context) string {
		if p := metadata.ValueFromIncomingContext(ctx, peerKey); len(p) > 0 {
			return p[0]
		}
		return ""
	}
	token := keys.Token(t, "u1", auth.RoleUser)
	tests := []struct {
		name     string
		md       []string
		want     codes.Code
		identity *auth.Identity // nil: none stored
	}{
		{"nothing", nil, codes.OK, nil},
		{"a user", []string{"authorization", "Bearer " + token}, codes.OK, &auth.Identity{Subject: "u1"}},
		{"a service", []string{peerKey, "order"}, codes.OK, &auth.Identity{Service: "order"}},
		{"a user via a service", []string{"authorization", "Bearer " + token, peerKey, "order"}, codes.OK, &auth.Identity{Subject: "u1", Service: "order"}},
		{"a bad token", []string{"authorization", "Bearer not.a.token"}, codes.Unauthenticated, nil},
		{"a bad token via a service", []string{"authorization", "Bearer not.a.token", peerKey, "order"}, codes.Unauthenticated, nil},
		{"another scheme", []string{"authorization", "Basic dXNlcjpwdw=="}, codes.Unauthenticated, nil},
		{"an expired token", []string{"authorization", "Bearer " + keys.ExpiredToken(t, "u1")}, codes.Unauthenticated, nil},
	}
	ic := interceptors.Identify(v, peer, testkit.Logger(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(tt.md...))
			var seen context.Context
			_, err := ic.Unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: "/x.v1.X/Y"}, func(ctx context.Context, _ any) (any, error) {
				seen = ctx
				return nil, nil
			})
			if status.Code(err) != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if err != nil {
				return
			}
			id, ok := auth.FromContext(seen)
			switch {
			case tt.identity == nil && ok:
				t.Errorf("stored %+v for nobody", id)
			case tt.identity != nil && (!ok || id.Subject != tt.identity.Subject || id.Service != tt.identity.Service):
				t.Errorf("identity = %+v, %v, want %+v", id, ok, *tt.identity)
			}
			if _, err := interceptors.Caller(seen); (err == nil) != (tt.identity != nil) {
				t.Errorf("Caller = %v with identity %v", err, tt.identity)
			}
		})
	}
}
