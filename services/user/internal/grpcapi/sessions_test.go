package grpcapi_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// TestTokensThroughTheChassis drives Login's refresh token, RefreshToken, Logout and
// ChangePassword through the real interceptor chain: policies, validation and status codes.
func TestTokensThroughTheChassis(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ada := signUp(t, c, "ada@example.com", "ada")
	ctx := context.Background()
	login, err := c.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: "ada"}, Password: "correct horse"})
	if err != nil || login.GetRefreshToken() == "" || !login.GetRefreshExpireTime().AsTime().After(login.GetExpireTime().AsTime()) {
		t.Fatalf("Login = %v, %v; want a refresh token outliving the access token", login, err)
	}

	// RefreshToken is public: no access token needed.
	renewed, err := c.RefreshToken(ctx, &userv1.RefreshTokenRequest{RefreshToken: login.GetRefreshToken()})
	if err != nil || renewed.GetTokenType() != "Bearer" || renewed.GetAccessToken() == "" || renewed.GetRefreshToken() == login.GetRefreshToken() {
		t.Fatalf("RefreshToken = %v, %v", renewed, err)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+renewed.GetAccessToken())
	if _, err := c.GetUser(authed, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: ada.user.GetId()}}); err != nil {
		t.Fatalf("GetUser with the renewed token: %v", err)
	}
	_, err = c.RefreshToken(ctx, &userv1.RefreshTokenRequest{})
	violates(t, err, "refresh_token")
	_, err = c.RefreshToken(ctx, &userv1.RefreshTokenRequest{RefreshToken: "mmr_made-up"})
	code(t, err, codes.Unauthenticated)

	// Logout and ChangePassword need a signed-in user.
	_, err = c.Logout(ctx, &userv1.LogoutRequest{RefreshToken: renewed.GetRefreshToken()})
	code(t, err, codes.Unauthenticated)
	_, err = c.ChangePassword(ctx, &userv1.ChangePasswordRequest{CurrentPassword: "correct horse", NewPassword: "new horse battery"})
	code(t, err, codes.Unauthenticated)
	_, err = c.Logout(ada.ctx, &userv1.LogoutRequest{RefreshToken: "mmr_made-up"})
	code(t, err, codes.NotFound)

	_, err = c.ChangePassword(ada.ctx, &userv1.ChangePasswordRequest{CurrentPassword: "wrong horse", NewPassword: "new horse battery"})
	violates(t, err, "current_password")
	_, err = c.ChangePassword(ada.ctx, &userv1.ChangePasswordRequest{CurrentPassword: "correct horse", NewPassword: "short"})
	violates(t, err, "new_password")
	changed, err := c.ChangePassword(ada.ctx, &userv1.ChangePasswordRequest{CurrentPassword: "correct horse", NewPassword: "new horse battery"})
	if err != nil || changed.GetUser().GetEtag() == ada.user.GetEtag() {
		t.Fatalf("ChangePassword = %v, %v", changed, err)
	}
	// Every session ended with the password change.
	_, err = c.RefreshToken(ctx, &userv1.RefreshTokenRequest{RefreshToken: renewed.GetRefreshToken()})
	code(t, err, codes.Unauthenticated)

	// Logout ends a new session; logging out twice succeeds.
	again, err := c.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: "ada"}, Password: "new horse battery"})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Logout(ada.ctx, &userv1.LogoutRequest{RefreshToken: again.GetRefreshToken()}); err != nil {
			t.Fatalf("Logout: %v", err)
		}
	}
	_, err = c.RefreshToken(ctx, &userv1.RefreshTokenRequest{RefreshToken: again.GetRefreshToken()})
	code(t, err, codes.Unauthenticated)
}
