package server_test

import (
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
