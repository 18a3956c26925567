package server_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// limitedChassis is chassis with a logger into a buffer and the server's metrics registry at
// hand.
func limitedChassis(t *testing.T, cfg server.Config) (userv1.UserServiceClient, testkit.Keys, *prometheus.Registry, *testkit.SyncBuffer) {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	keys := testkit.NewKeys(t)
	cfg.AuthPublicKey = keys.PublicKeyFile
	_, cc := testkit.Bufconn(t, func(lis net.Listener) *server.Server {
		srv, err := server.New("example", cfg, log, server.WithListener(lis), server.WithRegistry(reg))
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
			t.Fatal(err)
		}
		return srv
	})
	return userv1.NewUserServiceClient(cc), keys, reg, logs
}

// TestAddressLimitRunsBeforeAuthentication floods the server with calls carrying a bad token from
// one address: once the address' burst is spent they fail with ResourceExhausted and a RetryInfo,
// without a signature check (no more Unauthenticated answers, no more "rejected access token"
// lines) and without a log line each (one summary line, and the refused calls counted in
// meshmart_server_address_limited_total). With the limiter after authentication, as it was,
// every call is Unauthenticated and this test fails.
func TestAddressLimitRunsBeforeAuthentication(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.AddressRateLimit, cfg.AddressRateBurst = 0.001, 10 // ten calls, then nothing for a long while
	users, keys, reg, logs := limitedChassis(t, cfg)
	get := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	forged := withToken(t.Context(), keys.ExpiredToken(t, userID))

	const calls = 200
	byCode := map[codes.Code]int{}
	var retry *errdetails.RetryInfo
	for range calls {
		_, err := users.GetUser(forged, get)
		st := status.Convert(err)
		byCode[st.Code()]++
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				retry = ri
			}
		}
	}
	if byCode[codes.Unauthenticated] != 10 || byCode[codes.ResourceExhausted] != calls-10 {
		t.Fatalf("answers by code = %v, want 10 Unauthenticated (the burst) and %d ResourceExhausted", byCode, calls-10)
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() <= 0 {
		t.Errorf("ResourceExhausted carries RetryInfo %v, want a positive delay", retry)
	}
	// A good token from the same address is refused too: the address is spent, whoever it is.
	if _, err := users.GetUser(withToken(t.Context(), keys.Token(t, userID, "user")), get); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a good token from the spent address = %v, want ResourceExhausted", err)
	}

	if got := count(reg, "meshmart_server_address_limited_total"); got != calls-10+1 {
		t.Errorf("meshmart_server_address_limited_total = %v, want %d", got, calls-10+1)
	}
	out := logs.String()
	if n := strings.Count(out, "rejected access token"); n != 10 {
		t.Errorf("%d tokens were checked and rejected, want 10 (the burst): the refused calls must not reach a signature check", n)
	}
	if n := strings.Count(out, "calls refused by the per-address rate limit"); n != 1 {
		t.Errorf("%d summary lines for %d refused calls, want 1", n, calls-10+1)
	}
	if n := strings.Count(out, `"code":"ResourceExhausted"`); n != 0 {
		t.Errorf("%d refused calls logged one by one, want none", n)
	}
}

// TestPerUserLimitStaysAfterAuthentication checks that the per-client limit still keys on the
// signed-in user, not the address, with the per-address limit in front of it: two users calling
// from one address each get their own quota.
func TestPerUserLimitStaysAfterAuthentication(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.AddressRateLimit, cfg.AddressRateBurst = 0.001, 50
	cfg.RateLimit, cfg.RateBurst = 0.001, 5
	users, keys, _, _ := limitedChassis(t, cfg)
	get := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	greedy := withToken(t.Context(), keys.Token(t, userID, "user"))
	for i := range 5 {
		if _, err := users.GetUser(greedy, get); err != nil {
			t.Fatalf("call %d within the user's burst: %v", i, err)
		}
	}
	_, err := users.GetUser(greedy, get)
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "this client") {
		t.Fatalf("call over the user's limit = %v, want ResourceExhausted from the per-client limit", err)
	}
	other := withToken(t.Context(), keys.Token(t, "7c9e6679-7425-40de-944b-e07fc1f90ae7", "user"))
	for i := range 5 {
		if _, err := users.GetUser(other, get); err != nil {
			t.Fatalf("another user from the same address, call %d: %v; want their own quota", i, err)
		}
	}
}

func count(reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			var sum float64
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

// TestAddressLimitKeysOnForwardedClient calls a server over mutual TLS on loopback, where every
// caller has the same address: the gateway's calls are limited by the client each names in
// x-forwarded-for, so two browsers behind it get an allowance each, while the header is ignored
// from a user's client (no certificate) and from another service, which stay limited by their
// real address however many addresses they claim. With the limiter keyed on the peer address, as
// it was, the gateway's second client is refused with the first one's spent allowance.
func TestAddressLimitKeysOnForwardedClient(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.AddressRateLimit, cfg.AddressRateBurst = 0.001, 2 // two calls per address, then a long wait
	pki, keys, addr := forwardedChassis(t, cfg)
	gateway, anonymous, order := dialAs(t, addr, pki.As("gateway")), dialAs(t, addr, pki.Anonymous()), dialAs(t, addr, pki.As("order"))
	get := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	token := keys.Token(t, userID, "user")
	call := func(users userv1.UserServiceClient, forwardedFor string) error {
		ctx, cancel := context.WithTimeout(withToken(t.Context(), token), 5*time.Second)
		defer cancel()
		ctx = metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", forwardedFor)
		_, err := users.GetUser(ctx, get)
		return err
	}

	// Steps in order: the loopback address is shared by every caller, so the first spoofer
	// spends it for the others.
	for _, step := range []struct {
		name         string
		users        userv1.UserServiceClient
		forwardedFor string
		limited      bool
	}{
		{"gateway, first browser", gateway, "203.0.113.1", false},
		{"gateway, first browser", gateway, "203.0.113.1", false},
		{"gateway, first browser over its burst", gateway, "203.0.113.1", true},
		{"gateway, second browser", gateway, "198.51.100.7, 203.0.113.2", false},
		{"gateway, second browser", gateway, "203.0.113.2", false},
		{"gateway, malformed: the gateway's own address", gateway, "not-an-address", false},
		{"user's client, spoofing", anonymous, "192.0.2.1", false},
		{"user's client, the loopback address is spent", anonymous, "192.0.2.2", true},
		{"another service, spoofing", order, "192.0.2.3", true},
		{"gateway, a third browser still passes", gateway, "203.0.113.3", false},
	} {
		err := call(step.users, step.forwardedFor)
		switch {
		case step.limited && status.Code(err) != codes.ResourceExhausted:
			t.Errorf("%s (x-forwarded-for %q) = %v, want ResourceExhausted", step.name, step.forwardedFor, err)
		case !step.limited && err != nil:
			t.Errorf("%s (x-forwarded-for %q) = %v, want it to pass", step.name, step.forwardedFor, err)
		}
	}
}

// TestAnonymousRateLimitKeysOnForwardedClient checks the per-client limit of callers without a
// token, which keys on their address: the gateway's anonymous browsers (signing up, logging in)
// are limited one by one, not all together as the gateway.
func TestAnonymousRateLimitKeysOnForwardedClient(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.AddressRateLimit = 0
	cfg.RateLimit, cfg.RateBurst = 0.001, 1
	pki, _, addr := forwardedChassis(t, cfg)
	gateway := dialAs(t, addr, pki.As("gateway"))
	get := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	for _, step := range []struct {
		forwardedFor string
		limited      bool
	}{{"203.0.113.1", false}, {"203.0.113.1", true}, {"203.0.113.2", false}} {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(t.Context(), "x-forwarded-for", step.forwardedFor), 5*time.Second)
		_, err := gateway.GetUser(ctx, get) // no token: refused after the limit, by authorization
		cancel()
		if got := status.Code(err) == codes.ResourceExhausted; got != step.limited {
			t.Errorf("anonymous call for %s = %v, want limited %v", step.forwardedFor, err, step.limited)
		}
	}
}

// forwardedChassis serves the example users over mutual TLS on loopback with cfg and the
// identities of example, gateway and order, trusting tokens of the keys it returns.
func forwardedChassis(t *testing.T, cfg server.Config) (testkit.PKI, testkit.Keys, string) {
	t.Helper()
	pki := testkit.NewPKI(t, "example", "gateway", "order")
	keys := testkit.NewKeys(t)
	pki.Configure(&cfg, "example")
	cfg.AuthPublicKey = keys.PublicKeyFile
	srv, err := server.New("example", cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
		t.Fatal(err)
	}
	return pki, keys, testkit.Serve(t, srv).Addr
}

// dialAs dials the example server at addr with opt, for a client's identity.
func dialAs(t *testing.T, addr string, opt client.Option) userv1.UserServiceClient {
	t.Helper()
	// Without client-side health checking: its Watch stream is a call from the loopback address
	// too, which would spend that address's allowance in the background.
	cc, err := client.Dial(addr, testkit.Logger(t), client.WithServer("example"), opt,
		client.WithDialOptions(grpc.WithDisableHealthCheck()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return userv1.NewUserServiceClient(cc)
}
