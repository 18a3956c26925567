package security

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// accessTTL is the access-token lifetime the shared platforms run with (launch sets
// MESHMART_TOKEN_TTL): short, so that a test can wait one out; the default is 5 minutes.
const accessTTL = 20 * time.Second

// verifierLeeway is the clock skew every verifier forgives past a token's expiry (pkg/auth).
const verifierLeeway = 5 * time.Second

// Attack: a user's account is deleted (by themselves, after an attacker took their token, or by
// an admin), and the token keeps working: it listed payments, made a charge and cancelled an
// order for the rest of its hour.
//
// Defences: access tokens live minutes (20 s on this platform, 5 min by default), and the only
// way to a new one, RefreshToken, ends with the account (DeleteUser ends its sessions). So every
// call of the deleted account, ListPayments, CreateOrder and CancelOrder, is UNAUTHENTICATED at
// the latest one access-token lifetime (plus the verifiers' 5 s leeway) after its login, and its
// refresh token is UNAUTHENTICATED at once. Access tokens of an hour, or a refresh that outlives
// the account, fail this test. A control account that refreshes keeps working past the same
// lifetime: the refusal is the deletion's, not the clock's.
func TestDeletedAccountLosesAccessWithinATokenLifetime(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		name := "deleted-" + suffix()
		victim, control := r.SignUp(t, name), r.SignUp(t, "control-"+suffix())
		login := logIn(t, r, name+"@example.com", loadkit.Password)
		ctx := bearer(callCtx(t), login.GetAccessToken())
		order, err := r.Orders.CreateOrder(ctx, loadkit.OrderRequest("deleted-"+suffix()))
		if err != nil {
			t.Fatalf("CreateOrder before the delete: %v", err)
		}
		if got := login.GetExpireTime().AsTime().Sub(time.Now()); got > accessTTL {
			t.Fatalf("the access token expires in %v, want at most %v", got, accessTTL)
		}
		if _, err := r.Users.DeleteUser(ctx, &userv1.DeleteUserRequest{Id: victim.ID}); err != nil {
			t.Fatalf("DeleteUser: %v", err)
		}
		deleted := time.Now()
		_, err = r.Users.RefreshToken(callCtx(t), &userv1.RefreshTokenRequest{RefreshToken: login.GetRefreshToken()})
		wantCode(t, "RefreshToken after the delete", err, codes.Unauthenticated)

		calls := map[string]func(ctx context.Context) error{
			"ListPayments": func(ctx context.Context) error {
				_, err := r.Payments.ListPayments(ctx, &paymentv1.ListPaymentsRequest{})
				return err
			},
			"CreateOrder": func(ctx context.Context) error {
				_, err := r.Orders.CreateOrder(ctx, loadkit.OrderRequest("deleted-"+suffix()))
				return err
			},
			"CancelOrder": func(ctx context.Context) error {
				_, err := r.Orders.CancelOrder(ctx, &orderv1.CancelOrderRequest{Id: order.GetOrder().GetId()})
				return err
			},
		}
		// Until every call is refused: at the latest the token's expiry plus the leeway, with
		// 10 s to spare on a loaded machine.
		deadline := login.GetExpireTime().AsTime().Add(verifierLeeway + 10*time.Second)
		lastAccepted := map[string]time.Duration{}
		var refusedAll time.Duration
		for {
			refused := 0
			for name, call := range calls {
				err := call(bearer(callCtx(t), login.GetAccessToken()))
				if status.Code(err) == codes.Unauthenticated {
					refused++
				} else if err == nil {
					lastAccepted[name] = time.Since(deleted)
				}
			}
			if refused == len(calls) {
				refusedAll = time.Since(deleted)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%v after the delete (its token expired %v after it), not every call is UNAUTHENTICATED; last accepted: %v",
					time.Since(deleted).Round(time.Millisecond), login.GetExpireTime().AsTime().Sub(deleted).Round(time.Millisecond), lastAccepted)
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("access-token lifetime %v; every call of the deleted account UNAUTHENTICATED %v after the delete (its token expired %v after it); last calls accepted after the delete: %v",
			accessTTL, refusedAll.Round(time.Millisecond), login.GetExpireTime().AsTime().Sub(deleted).Round(time.Millisecond), lastAccepted)
		if limit := accessTTL + verifierLeeway + 5*time.Second; refusedAll > limit {
			t.Errorf("the deleted account kept access %v after the delete, want at most %v", refusedAll, limit)
		}

		// The control account, whose client renews its token (loadkit.Account.In), still works
		// a full lifetime after its login.
		if _, err := r.Payments.ListPayments(control.In(callCtx(t)), &paymentv1.ListPaymentsRequest{}); err != nil {
			t.Errorf("the control account's ListPayments past a token lifetime: %v", err)
		}
	})
}

func refresh(t *testing.T, r *loadkit.Rig, token string) (*userv1.RefreshTokenResponse, error) {
	t.Helper()
	return r.Users.RefreshToken(callCtx(t), &userv1.RefreshTokenRequest{RefreshToken: token})
}

// Attack: keep a session alive after the account's access was meant to end: refresh after the
// account was deleted, suspended, or its password changed (the usual answer to a stolen
// password); replay a refresh token stolen from a client that has since rotated it; refresh after
// logging out.
//
// Defences: DeleteUser, suspension (UpdateUser of status by an admin) and ChangePassword end every
// session of the account in the same transaction; a spent refresh token sent again ends its whole
// session (the thief's and the owner's tokens alike); Logout ends the session. Each refresh is
// UNAUTHENTICATED. A refresh that outlives any of these fails this test; each case first refreshes
// once successfully, so the refusal is the defence's.
func TestRefreshTokensEndWithTheSession(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		admin := r.LogInAdmin(t)
		ends := []struct {
			name string
			end  func(t *testing.T, a loadkit.Account, access string)
		}{
			{"deleted", func(t *testing.T, a loadkit.Account, access string) {
				_, err := r.Users.DeleteUser(bearer(callCtx(t), access), &userv1.DeleteUserRequest{Id: a.ID})
				if err != nil {
					t.Fatalf("DeleteUser: %v", err)
				}
			}},
			{"suspended", func(t *testing.T, a loadkit.Account, _ string) {
				_, err := r.Users.UpdateUser(admin.In(callCtx(t)), &userv1.UpdateUserRequest{
					User:       &userv1.User{Id: a.ID, Status: userv1.UserStatus_USER_STATUS_SUSPENDED},
					UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"status"}},
				})
				if err != nil {
					t.Fatalf("suspend: %v", err)
				}
			}},
			{"password changed", func(t *testing.T, _ loadkit.Account, access string) {
				_, err := r.Users.ChangePassword(bearer(callCtx(t), access), &userv1.ChangePasswordRequest{
					CurrentPassword: loadkit.Password, NewPassword: "another horse battery"})
				if err != nil {
					t.Fatalf("ChangePassword: %v", err)
				}
			}},
			{"logged out", func(t *testing.T, a loadkit.Account, access string) {
				_, err := r.Users.Logout(bearer(callCtx(t), access), &userv1.LogoutRequest{RefreshToken: a.Refresh})
				if err != nil {
					t.Fatalf("Logout: %v", err)
				}
			}},
		}
		for _, tt := range ends {
			t.Run(tt.name, func(t *testing.T) {
				a := r.SignUp(t, "ends-"+suffix())
				next, err := refresh(t, r, a.Refresh)
				if err != nil {
					t.Fatalf("a first RefreshToken: %v", err)
				}
				tt.end(t, a, next.GetAccessToken())
				_, err = refresh(t, r, next.GetRefreshToken())
				wantCode(t, "RefreshToken after the session ended", err, codes.Unauthenticated)
			})
		}

		t.Run("replayed", func(t *testing.T) {
			name := "replay-" + suffix()
			a := r.SignUp(t, name)
			other := logIn(t, r, name+"@example.com", loadkit.Password) // a second session of the account
			owner, err := refresh(t, r, a.Refresh)
			if err != nil {
				t.Fatalf("the owner's RefreshToken: %v", err)
			}
			// The thief replays the token the owner just spent: refused, and the session ends,
			// so the owner's new token is refused too, and so would the thief's be.
			_, err = refresh(t, r, a.Refresh)
			wantCode(t, "RefreshToken with a spent token", err, codes.Unauthenticated)
			_, err = refresh(t, r, owner.GetRefreshToken())
			wantCode(t, "RefreshToken with the session's newest token after the replay", err, codes.Unauthenticated)
			if _, err := refresh(t, r, other.GetRefreshToken()); err != nil {
				t.Errorf("the account's other session after the replay: %v", err)
			}
		})

		t.Run("another's refresh token", func(t *testing.T) {
			a, b := r.SignUp(t, "logout-a-"+suffix()), r.SignUp(t, "logout-b-"+suffix())
			_, err := r.Users.Logout(b.In(callCtx(t)), &userv1.LogoutRequest{RefreshToken: a.Refresh})
			wantCode(t, "Logout with another account's refresh token", err, codes.NotFound)
			if _, err := refresh(t, r, a.Refresh); err != nil {
				t.Errorf("the refused Logout ended the session: %v", err)
			}
		})
	})
}

// Attack: a signed-in user probes which accounts exist by looking up ids, emails and usernames
// of others: an existing account answered PERMISSION_DENIED, a missing one NOT_FOUND.
//
// Defence: to a user who is not an admin, anyone else's account is NOT_FOUND with the message a
// missing account gets (user.Service.Get, and the same for UpdateUser and DeleteUser), so the
// answers are identical. Telling them apart by code or message fails this test; an admin still
// reads the existing account.
func TestLookupsOfOthersAnswerAlike(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		sfx := suffix()
		prober, target := r.SignUp(t, "prober-"+sfx), r.SignUp(t, "target-"+sfx)
		missing := "missing-" + sfx
		pairs := []struct {
			name             string
			existing, absent *userv1.GetUserRequest
		}{
			{"by id", &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: target.ID}},
				&userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: uuid.NewString()}}},
			{"by email", &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Email{Email: "target-" + sfx + "@example.com"}},
				&userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Email{Email: missing + "@example.com"}}},
			{"by username", &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "target-" + sfx}},
				&userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: missing}}},
		}
		for _, p := range pairs {
			_, errE := r.Users.GetUser(prober.In(callCtx(t)), p.existing)
			_, errA := r.Users.GetUser(prober.In(callCtx(t)), p.absent)
			se, sa := status.Convert(errE), status.Convert(errA)
			if se.Code() != codes.NotFound || se.Code() != sa.Code() || se.Message() != sa.Message() || len(se.Details()) != len(sa.Details()) {
				t.Errorf("GetUser %s: an existing account answers %v %q, a missing one %v %q; want the same NotFound",
					p.name, se.Code(), se.Message(), sa.Code(), sa.Message())
			}
		}
		update := func(id string) error {
			_, err := r.Users.UpdateUser(prober.In(callCtx(t)), &userv1.UpdateUserRequest{
				User: &userv1.User{Id: id, GivenName: "Mallory"}, UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"given_name"}}})
			return err
		}
		del := func(id string) error {
			_, err := r.Users.DeleteUser(prober.In(callCtx(t)), &userv1.DeleteUserRequest{Id: id})
			return err
		}
		for name, call := range map[string]func(string) error{"UpdateUser": update, "DeleteUser": del} {
			se, sa := status.Convert(call(target.ID)), status.Convert(call(uuid.NewString()))
			if se.Code() != codes.NotFound || se.Code() != sa.Code() || se.Message() != sa.Message() {
				t.Errorf("%s: an existing account answers %v %q, a missing one %v %q; want the same NotFound",
					name, se.Code(), se.Message(), sa.Code(), sa.Message())
			}
		}
		// Control: the account exists, and an admin reads it.
		admin := r.LogInAdmin(t)
		if got, err := r.Users.GetUser(admin.In(callCtx(t)), pairs[0].existing); err != nil || got.GetUser().GetGivenName() == "Mallory" {
			t.Errorf("the admin's GetUser of the target = %v, %v", got, err)
		}
	})
}
