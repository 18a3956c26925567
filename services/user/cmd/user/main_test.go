package main

import (
	"context"
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
