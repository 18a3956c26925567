package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// TestEndToEnd runs the real binary, registered in a real Consul agent, on each database, and
// calls it through consul:// as other services do.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	bin := testkit.BuildBinary(t, ".")
	agent := testkit.StartConsul(t)
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) { endToEnd(t, bin, agent, db.New(t), db.Name) })
}

func endToEnd(t *testing.T, bin string, agent *testkit.Consul, dsn, tag string) {
	privPEM, pubPEM, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile, pubFile := filepath.Join(dir, "auth.key.pem"), filepath.Join(dir, "auth.pub.pem")
	if err := os.WriteFile(keyFile, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The first admin is made on the database by the binary's admin subcommand, before the
	// service starts, as the launcher and the compose stack do.
	pwFile := filepath.Join(dir, "admin-password")
	if err := os.WriteFile(pwFile, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "admin", "-email", "root@example.com", "-username", "root", "-password-file", pwFile)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+dsn)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "password: correct horse") {
		t.Fatalf("user admin: %v\n%s", err, out)
	}
	// The next key, published beside the signing key before a rotation, given as a private key
	// file (as the key a replica will sign with next would be).
	nextPEM, _, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	nextFile := filepath.Join(dir, "next.key.pem")
	if err := os.WriteFile(nextFile, nextPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pki := testkit.NewPKI(t, "user")
	testkit.StartProcess(t, "user service", bin, []string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "",
		"-consul-addr", agent.Addr, "-tags", tag, "-check-interval", "500ms", "-drain-delay", "100ms",
		"-signing-key", keyFile, "-extra-keys", nextFile},
		append(pki.Env("user"), "DATABASE_URL="+dsn)...)

	cc, err := client.Dial("consul://"+agent.Addr+"/user?tag="+tag, testkit.Logger(t), pki.Anonymous())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	users := userv1.NewUserServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The service is reachable once it has registered.
	var login *userv1.LoginResponse
	for {
		login, err = users.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: "root"}, Password: "correct horse"})
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("Login: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// With the default settings an access token lives 5 minutes and a refresh token 30 days; the
	// refresh token renews the access token once.
	if left := time.Until(login.GetExpireTime().AsTime()); left > 5*time.Minute || left < 4*time.Minute {
		t.Errorf("the access token expires in %v, want 5 minutes (the default -token-ttl)", left)
	}
	if left := time.Until(login.GetRefreshExpireTime().AsTime()); left > 30*24*time.Hour || left < 29*24*time.Hour {
		t.Errorf("the refresh token expires in %v, want 30 days (the default -refresh-token-ttl)", left)
	}
	renewed, err := users.RefreshToken(ctx, &userv1.RefreshTokenRequest{RefreshToken: login.GetRefreshToken()})
	if err != nil || renewed.GetAccessToken() == "" || renewed.GetRefreshToken() == login.GetRefreshToken() {
		t.Fatalf("RefreshToken = %v, %v", renewed, err)
	}
	// Sign-up makes a plain user, whatever the email.
	if _, err := users.CreateUser(ctx, &userv1.CreateUserRequest{Email: "ROOT2@example.com", Username: "root2", Password: "correct horse", GivenName: "R"}); err != nil {
		t.Fatal(err)
	}
	created := login
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.GetAccessToken())
	published, err := users.ListTokenKeys(ctx, &userv1.ListTokenKeysRequest{})
	if err != nil {
		t.Fatalf("ListTokenKeys: %v", err)
	}
	signing, err := auth.LoadPublicKey(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	if keys := published.GetKeys(); len(keys) != 2 || keys[0].GetKid() != auth.KeyID(signing) {
		t.Fatalf("ListTokenKeys = %v, want the signing key, then the next one", keys)
	}
	got, err := users.GetUser(authed, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: created.GetUser().GetId()}})
	if err != nil || got.GetUser().GetEmail() != "root@example.com" {
		t.Fatalf("GetUser = %v, %v", got, err)
	}
	list, err := users.ListUsers(authed, &userv1.ListUsersRequest{})
	if err != nil || len(list.GetUsers()) != 2 || len(list.GetUsers()[1].GetRoles()) != 1 {
		t.Fatalf("ListUsers as admin = %v, %v", list, err)
	}
	_, err = users.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: created.GetUser().GetId()}})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetUser without a token = %v", err)
	}
}

// TestLoginBackoffPerForwardedAddress runs the real binary and fails logins through callers that
// all share the loopback address: the gateway's (by its mutual-TLS certificate) back off per
// browser it names in x-forwarded-for, so one guessing browser does not lock out the next one,
// while a user's client or another service writing that header is held to its real address. With
// the backoff keyed on the peer address, as it was, the gateway's second browser is refused for
// the first one's failures, and spoofing callers would not be: the test fails either way.
func TestLoginBackoffPerForwardedAddress(t *testing.T) {
	t.Parallel()
	bin := testkit.BuildBinary(t, ".")
	pki := testkit.NewPKI(t, "user", "gateway", "order")
	addr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	// Two free failures per address, then a wait far longer than the test; the accounts never
	// back off, so only the address decides.
	testkit.StartProcess(t, "user service", bin, []string{"-grpc-addr", addr, "-http-addr", "", "-consul-addr", "",
		"-database", filepath.Join(t.TempDir(), "user.sqlite"), "-drain-delay", "0s",
		"-login-address-free-failures", "2", "-login-free-failures", "1000", "-login-backoff-base", "1h"},
		pki.Env("user")...)
	dial := func(opt client.Option) userv1.UserServiceClient {
		cc, err := client.Dial(addr, testkit.Logger(t), client.WithServer("user"), opt)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cc.Close() })
		return userv1.NewUserServiceClient(cc)
	}
	gateway, anonymous, order := dial(pki.As("gateway")), dial(pki.Anonymous()), dial(pki.As("order"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := anonymous.CreateUser(ctx, &userv1.CreateUserRequest{Email: "ada@example.com", Username: "ada", Password: "correct horse", GivenName: "Ada"})
		if err == nil {
			break
		}
		if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	login := func(users userv1.UserServiceClient, forwardedFor, username, password string) error {
		_, err := users.Login(metadata.AppendToOutgoingContext(ctx, "x-forwarded-for", forwardedFor),
			&userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: username}, Password: password})
		return err
	}

	// Steps in order: every caller is on the loopback address, so the spoofers' failures add up.
	for _, step := range []struct {
		name         string
		users        userv1.UserServiceClient
		forwardedFor string
		password     string
		want         codes.Code
	}{
		{"gateway, first browser guesses", gateway, "203.0.113.1", "wrong", codes.Unauthenticated},
		{"gateway, first browser guesses", gateway, "203.0.113.1", "wrong", codes.Unauthenticated},
		{"gateway, first browser guesses", gateway, "203.0.113.1", "wrong", codes.Unauthenticated},
		{"gateway, first browser backs off", gateway, "203.0.113.1", "correct horse", codes.ResourceExhausted},
		{"gateway, second browser logs in", gateway, "198.51.100.9, 203.0.113.2", "correct horse", codes.OK},
		{"user's client guesses, spoofing", anonymous, "192.0.2.1", "wrong", codes.Unauthenticated},
		{"user's client guesses, spoofing", anonymous, "192.0.2.2", "wrong", codes.Unauthenticated},
		{"user's client guesses, spoofing", anonymous, "192.0.2.3", "wrong", codes.Unauthenticated},
		{"user's client backs off however it spoofs", anonymous, "192.0.2.4", "correct horse", codes.ResourceExhausted},
		{"another service backs off however it spoofs", order, "192.0.2.5", "correct horse", codes.ResourceExhausted},
		{"gateway, malformed: its own address backs off", gateway, "not-an-address", "correct horse", codes.ResourceExhausted},
		{"gateway, third browser logs in", gateway, "203.0.113.3", "correct horse", codes.OK},
	} {
		if err := login(step.users, step.forwardedFor, "ada", step.password); status.Code(err) != step.want {
			t.Errorf("%s (x-forwarded-for %q): Login = %v, want %v", step.name, step.forwardedFor, err, step.want)
		}
	}
}
