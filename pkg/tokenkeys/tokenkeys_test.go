package tokenkeys_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/pkg/tokenkeys"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// publisher is a user service that publishes the keys a test gives it, or fails while down.
type publisher struct {
	userv1.UnimplementedUserServiceServer
	mu   sync.Mutex
	keys []ed25519.PublicKey
	down bool
}

func (p *publisher) set(down bool, keys ...ed25519.PublicKey) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down, p.keys = down, keys
}

func (p *publisher) ListTokenKeys(context.Context, *userv1.ListTokenKeysRequest) (*userv1.ListTokenKeysResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return nil, status.Error(codes.Unavailable, "down")
	}
	resp := &userv1.ListTokenKeysResponse{Issuer: auth.DefaultIssuer}
	for _, k := range p.keys {
		resp.Keys = append(resp.Keys, &userv1.TokenKey{Kid: auth.KeyID(k), Alg: "EdDSA", PublicKey: k})
	}
	return resp, nil
}

// platform is a user service publishing keys and an example service whose verifier Sync feeds
// from it, both behind the chassis' real chain over bufconn.
type platform struct {
	users   *publisher
	example userv1.UserServiceClient
}

func start(t *testing.T, refresh time.Duration) *platform {
	t.Helper()
	p := &platform{users: &publisher{down: true}}
	usersConn := testkit.BufconnService(t, "user", testkit.NewKeys(t), &userv1.UserService_ServiceDesc, p.users)

	v, err := auth.NewVerifier(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, exampleConn := testkit.Bufconn(t, func(lis net.Listener) *server.Server {
		srv, err := server.New("example", testkit.TestConfig(), testkit.Logger(t), server.WithListener(lis), server.WithVerifier(v))
		if err != nil {
			t.Fatal(err)
		}
		srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("example"))
		return srv
	})
	p.example = userv1.NewUserServiceClient(exampleConn)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tokenkeys.Sync(ctx, userv1.NewUserServiceClient(usersConn), v, auth.DefaultIssuer, refresh, testkit.Logger(t))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Sync: %v", err)
		}
	})
	return p
}

// call calls the example service with a token k signed and returns the status code.
func (p *platform) call(t *testing.T, k key) codes.Code {
	t.Helper()
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+k.token(t))
	_, err := p.example.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "someone"}})
	return status.Code(err)
}

// eventually waits up to 5 s for a call with k's token to end with want.
func (p *platform) eventually(t *testing.T, k key, want codes.Code) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := p.call(t, k)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a token of key %s: %v, want %v", k.name, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type key struct {
	name string
	pub  ed25519.PublicKey
	iss  *auth.Issuer
}

func newKey(t *testing.T, name string) key {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := auth.NewIssuer(priv, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return key{name, pub, iss}
}

func (k key) token(t *testing.T) string {
	t.Helper()
	token, _, err := k.iss.Issue("u1", []string{auth.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// TestSyncFollowsThePublishedKeys rotates keys on the user service and checks that the
// service fed by Sync follows: nothing verifies before the first fetch (Unavailable, retried),
// the first fetch is retried until it succeeds, a key published later is accepted, a key never
// published is refused, and a withdrawn key's tokens stop verifying.
func TestSyncFollowsThePublishedKeys(t *testing.T) {
	t.Parallel()
	a, b, never := newKey(t, "a"), newKey(t, "b"), newKey(t, "never published")
	p := start(t, 100*time.Millisecond)

	if got := p.call(t, a); got != codes.Unavailable {
		t.Fatalf("before any key arrived: %v, want Unavailable", got)
	}
	p.users.set(false, a.pub)
	p.eventually(t, a, codes.OK) // the first fetch is retried every second

	p.users.set(false, a.pub, b.pub) // the next key is published
	p.eventually(t, b, codes.OK)
	if got := p.call(t, never); got != codes.Unauthenticated {
		t.Errorf("a token of a key never published: %v, want Unauthenticated", got)
	}

	p.users.set(true) // the user service goes away: the keys held stay
	time.Sleep(300 * time.Millisecond)
	if got := p.call(t, b); got != codes.OK {
		t.Errorf("while the user service is down: %v, want OK", got)
	}

	p.users.set(false, b.pub) // the previous key is withdrawn
	p.eventually(t, a, codes.Unauthenticated)
	if got := p.call(t, b); got != codes.OK {
		t.Errorf("a token of the remaining key: %v, want OK", got)
	}
}

// TestSyncFetchesOnUnknownKey checks that a token naming a key the service does not know makes
// Sync fetch at once, long before its next refresh.
func TestSyncFetchesOnUnknownKey(t *testing.T) {
	t.Parallel()
	a, b := newKey(t, "a"), newKey(t, "b")
	p := start(t, time.Hour)
	p.users.set(false, a.pub)
	p.eventually(t, a, codes.OK)

	p.users.set(false, a.pub, b.pub)
	// The first call asks for the keys and fails; the refresh it asked for brings b in.
	p.eventually(t, b, codes.OK)
}

// TestFetchRefusesBadKeys checks what Fetch accepts from the user service.
func TestFetchRefusesBadKeys(t *testing.T) {
	t.Parallel()
	good := newKey(t, "good")
	tests := []struct {
		name    string
		keys    []*userv1.TokenKey
		wantErr bool
	}{
		{"valid", []*userv1.TokenKey{{Kid: auth.KeyID(good.pub), Alg: "EdDSA", PublicKey: good.pub}}, false},
		{"none", nil, true},
		{"wrong kid", []*userv1.TokenKey{{Kid: "made-up", Alg: "EdDSA", PublicKey: good.pub}}, true},
		{"wrong alg", []*userv1.TokenKey{{Kid: auth.KeyID(good.pub), Alg: "RS256", PublicKey: good.pub}}, true},
		{"short key", []*userv1.TokenKey{{Kid: "x", Alg: "EdDSA", PublicKey: good.pub[:16]}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, keys, err := tokenkeys.Fetch(t.Context(), fixed{keys: tt.keys})
			if tt.wantErr != (err != nil) {
				t.Fatalf("Fetch = %v, %v; want an error: %v", keys, err, tt.wantErr)
			}
		})
	}
}

// fixed is a user service client answering ListTokenKeys with fixed keys.
type fixed struct {
	userv1.UserServiceClient
	keys []*userv1.TokenKey
}

func (f fixed) ListTokenKeys(context.Context, *userv1.ListTokenKeysRequest, ...grpc.CallOption) (*userv1.ListTokenKeysResponse, error) {
	return &userv1.ListTokenKeysResponse{Issuer: auth.DefaultIssuer, Keys: f.keys}, nil
}
