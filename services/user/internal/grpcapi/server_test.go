package grpcapi_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/user/internal/grpcapi"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// adminEmail is the admin every replica's database holds, made as the `user admin` subcommand
// makes one: no RPC can.
const adminEmail = "admin@example.com"

// newClient runs the user service over bufconn behind the real chassis, on a fresh SQLite file.
func newClient(t *testing.T) userv1.UserServiceClient {
	t.Helper()
	return newReplica(t, testkit.SQLitePath(t), testkit.NewKeys(t))
}

// newReplica runs one replica of the user service over bufconn on the SQLite file at path,
// issuing access tokens with keys.
func newReplica(t *testing.T, path string, keys testkit.Keys) userv1.UserServiceClient {
	t.Helper()
	c, _ := newReplicaAndStore(t, path, keys)
	return c
}

// newClientAndStore is newClient that also returns the store, for a test to break.
func newClientAndStore(t *testing.T) (userv1.UserServiceClient, *store.Users) {
	t.Helper()
	return newReplicaAndStore(t, testkit.SQLitePath(t), testkit.NewKeys(t))
}

func newReplicaAndStore(t *testing.T, path string, keys testkit.Keys, opts ...grpcapi.Option) (userv1.UserServiceClient, *store.Users) {
	t.Helper()
	users, err := store.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { users.Close() })
	svc, err := user.NewService(users, keys.Issuer)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.EnsureAdmin(context.Background(), user.Admin{Email: adminEmail, Username: "root", Password: "correct horse"}); err != nil {
		t.Fatal(err)
	}
	api, err := grpcapi.New(svc, testkit.Logger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	cc := testkit.BufconnService(t, "user", keys, &userv1.UserService_ServiceDesc, api)
	return userv1.NewUserServiceClient(cc), users
}

type account struct {
	user *userv1.User
	ctx  context.Context // carries the account's token
}

// signUp creates an account and logs it in.
func signUp(t *testing.T, c userv1.UserServiceClient, email, username string) account {
	t.Helper()
	created, err := c.CreateUser(context.Background(), &userv1.CreateUserRequest{Email: email, Username: username, Password: "correct horse", GivenName: "Ada"})
	if err != nil {
		t.Fatalf("CreateUser %s: %v", username, err)
	}
	a := logIn(t, c, email)
	if a.user.GetId() != created.GetUser().GetId() {
		t.Fatalf("Login as %s = %v, want %v", email, a.user, created.GetUser())
	}
	return a
}

// logIn logs an existing account in, such as the admin at adminEmail.
func logIn(t *testing.T, c userv1.UserServiceClient, email string) account {
	t.Helper()
	ctx := context.Background()
	login, err := c.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Email{Email: email}, Password: "correct horse"})
	if err != nil {
		t.Fatalf("Login %s: %v", email, err)
	}
	if login.GetTokenType() != "Bearer" || login.GetExpireTime().AsTime().Before(time.Now()) {
		t.Fatalf("Login = %v", login)
	}
	return account{login.GetUser(), metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.GetAccessToken())}
}

func code(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("got %v, want %v", err, want)
	}
}

func TestSignUpAndLogin(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ada := signUp(t, c, "Ada@Example.com", "Ada")
	if ada.user.GetEmail() != "ada@example.com" || ada.user.GetUsername() != "ada" || ada.user.GetEtag() == "" {
		t.Errorf("created user = %v", ada.user)
	}
	_, err := c.CreateUser(context.Background(), &userv1.CreateUserRequest{Email: "ada@example.com", Username: "other", Password: "correct horse", GivenName: "A"})
	code(t, err, codes.AlreadyExists)
	_, err = c.CreateUser(context.Background(), &userv1.CreateUserRequest{Email: "x@example.com", Username: "ADA", Password: "correct horse", GivenName: "A"})
	code(t, err, codes.AlreadyExists)
	_, err = c.CreateUser(context.Background(), &userv1.CreateUserRequest{Email: "not an email", Username: "x", Password: "short", GivenName: "A"})
	code(t, err, codes.InvalidArgument)

	for _, req := range []*userv1.LoginRequest{
		{Identifier: &userv1.LoginRequest_Username{Username: "ada"}, Password: "wrong horse"},
		{Identifier: &userv1.LoginRequest_Username{Username: "nobody"}, Password: "correct horse"},
	} {
		_, err := c.Login(context.Background(), req)
		code(t, err, codes.Unauthenticated)
		if status.Convert(err).Message() != "wrong email, username or password" {
			t.Errorf("login failures must look alike, got %q", status.Convert(err).Message())
		}
	}
}

func TestReadUpdateDelete(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	ada, bob := signUp(t, c, "ada@example.com", "ada"), signUp(t, c, "bob@example.com", "bob")
	admin := logIn(t, c, adminEmail)

	got, err := c.GetUser(ada.ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ADA"}})
	if err != nil || got.GetUser().GetId() != ada.user.GetId() {
		t.Fatalf("GetUser self = %v, %v", got, err)
	}
	// Someone else's account is NotFound to a user, with the very answer a missing one gets, by
	// id, email or username: lookups do not tell which accounts exist.
	_, missing := c.GetUser(ada.ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: "00000000-0000-4000-8000-00000000dead"}})
	code(t, missing, codes.NotFound)
	for _, l := range []*userv1.GetUserRequest{
		{Lookup: &userv1.GetUserRequest_Id{Id: bob.user.GetId()}},
		{Lookup: &userv1.GetUserRequest_Email{Email: "bob@example.com"}},
		{Lookup: &userv1.GetUserRequest_Username{Username: "bob"}},
	} {
		_, err := c.GetUser(ada.ctx, l)
		if st := status.Convert(err); st.Code() != codes.NotFound || st.Message() != status.Convert(missing).Message() {
			t.Errorf("GetUser(%v) of someone else = %v, want %v as for a missing account", l, err, missing)
		}
	}
	_, err = c.GetUser(context.Background(), &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: bob.user.GetId()}})
	code(t, err, codes.Unauthenticated)
	if _, err := c.GetUser(admin.ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Email{Email: "bob@example.com"}}); err != nil {
		t.Fatalf("an admin reading bob: %v", err)
	}

	update := func(ctx context.Context, u *userv1.User, paths ...string) (*userv1.User, error) {
		resp, err := c.UpdateUser(ctx, &userv1.UpdateUserRequest{User: u, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
		return resp.GetUser(), err
	}
	changed, err := update(ada.ctx, &userv1.User{Id: ada.user.GetId(), FamilyName: "Lovelace", Etag: ada.user.GetEtag()}, "family_name")
	if err != nil || changed.GetFamilyName() != "Lovelace" || changed.GetEtag() == ada.user.GetEtag() {
		t.Fatalf("UpdateUser = %v, %v", changed, err)
	}
	_, err = update(ada.ctx, &userv1.User{Id: ada.user.GetId(), FamilyName: "Byron", Etag: ada.user.GetEtag()}, "family_name")
	code(t, err, codes.Aborted)
	_, err = update(ada.ctx, &userv1.User{Id: ada.user.GetId()}, "create_time")
	code(t, err, codes.InvalidArgument)
	// No RPC grants a role, to oneself or, by an admin, to anyone.
	for _, who := range []account{ada, admin} {
		_, err = update(who.ctx, &userv1.User{Id: ada.user.GetId(), Roles: []userv1.Role{userv1.Role_ROLE_ADMIN}}, "roles")
		violates(t, err, "user.roles")
	}
	_, err = update(ada.ctx, &userv1.User{Id: bob.user.GetId(), GivenName: "X"}, "given_name")
	code(t, err, codes.NotFound)
	_, err = update(ada.ctx, &userv1.User{Id: ada.user.GetId(), Username: "bob"}, "username")
	code(t, err, codes.AlreadyExists)
	suspended, err := update(admin.ctx, &userv1.User{Id: bob.user.GetId(), Status: userv1.UserStatus_USER_STATUS_SUSPENDED}, "status")
	if err != nil || suspended.GetStatus() != userv1.UserStatus_USER_STATUS_SUSPENDED {
		t.Fatalf("admin suspends bob = %v, %v", suspended, err)
	}

	_, err = c.DeleteUser(ada.ctx, &userv1.DeleteUserRequest{Id: ada.user.GetId(), Etag: ada.user.GetEtag()})
	code(t, err, codes.Aborted)
	deleted, err := c.DeleteUser(ada.ctx, &userv1.DeleteUserRequest{Id: ada.user.GetId()})
	if err != nil || deleted.GetUser().GetDeleteTime() == nil || deleted.GetUser().GetStatus() != userv1.UserStatus_USER_STATUS_DELETED {
		t.Fatalf("DeleteUser = %v, %v", deleted, err)
	}
	_, err = c.GetUser(admin.ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: ada.user.GetId()}})
	code(t, err, codes.NotFound)
	_, err = c.Login(context.Background(), &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: "ada"}, Password: "correct horse"})
	code(t, err, codes.Unauthenticated)
}

func TestListExportImport(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	admin := logIn(t, c, adminEmail)
	ada := signUp(t, c, "ada@example.com", "ada")

	// Listing, exporting and importing are for admins (the contract's policy, enforced by the
	// chassis): a signed-in user is PermissionDenied, nobody at all Unauthenticated.
	_, err := c.ListUsers(ada.ctx, &userv1.ListUsersRequest{})
	code(t, err, codes.PermissionDenied)
	_, err = c.ListUsers(context.Background(), &userv1.ListUsersRequest{})
	code(t, err, codes.Unauthenticated)
	denied, err := c.ImportUsers(ada.ctx)
	if err == nil {
		_, err = denied.CloseAndRecv()
	}
	code(t, err, codes.PermissionDenied)

	// Import: two good, one duplicate, one invalid, one empty.
	stream, err := c.ImportUsers(admin.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []*userv1.CreateUserRequest{
		{Email: "c1@example.com", Username: "cc1", Password: "correct horse", GivenName: "C"},
		{Email: "ada@example.com", Username: "cc2", Password: "correct horse", GivenName: "C"},
		{Email: "bad", Username: "cc3", Password: "correct horse", GivenName: "C"},
		nil,
		{Email: "c5@example.com", Username: "cc5", Password: "correct horse", GivenName: "C"},
	} {
		if err := stream.Send(&userv1.ImportUsersRequest{User: u}); err != nil {
			t.Fatal(err)
		}
	}
	summary, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatal(err)
	}
	if summary.GetCreatedCount() != 2 || summary.GetFailedCount() != 3 || len(summary.GetErrors()) != 3 || len(summary.GetResults()) != 0 {
		t.Fatalf("import summary = %v", summary)
	}
	wantIndexes := []int64{1, 2, 3}
	wantCodes := []codes.Code{codes.AlreadyExists, codes.InvalidArgument, codes.InvalidArgument}
	wantFields := []string{"email", "email", "user"}
	for i, r := range summary.GetErrors() {
		if r.GetIndex() != wantIndexes[i] || codes.Code(r.GetError().GetCode()) != wantCodes[i] || r.GetError().GetField() != wantFields[i] {
			t.Errorf("error %d = %v, want index %d code %v field %q", i, r, wantIndexes[i], wantCodes[i], wantFields[i])
		}
	}

	// Paging through the 4 live accounts two at a time.
	var names []string
	token := ""
	for {
		page, err := c.ListUsers(admin.ctx, &userv1.ListUsersRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range page.GetUsers() {
			names = append(names, u.GetUsername())
		}
		if token = page.GetNextPageToken(); token == "" {
			break
		}
	}
	if len(names) != 4 {
		t.Errorf("listed %v, want 4 accounts", names)
	}
	_, err = c.ListUsers(admin.ctx, &userv1.ListUsersRequest{PageToken: "forged.token"})
	code(t, err, codes.InvalidArgument)

	// Export streams every account; a client that cancels ends it.
	export, err := c.ExportUsers(admin.ctx, &userv1.ExportUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, err := export.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 4 {
		t.Errorf("exported %d accounts, want 4", n)
	}
	_, err = c.ExportUsers(ada.ctx, &userv1.ExportUsersRequest{})
	if err == nil {
		s, _ := c.ExportUsers(ada.ctx, &userv1.ExportUsersRequest{})
		_, err = s.Recv()
	}
	code(t, err, codes.PermissionDenied)
}

func TestInvalidRequestNamesTheField(t *testing.T) {
	t.Parallel()
	c := newClient(t)
	_, err := c.CreateUser(context.Background(), &userv1.CreateUserRequest{Email: "ok@example.com", Username: "-bad", Password: "correct horse", GivenName: "A"})
	violates(t, err, "username")
}

// violates fails t unless err is InvalidArgument with a field violation on field.
func violates(t *testing.T, err error, field string) {
	t.Helper()
	code(t, err, codes.InvalidArgument)
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok && len(br.GetFieldViolations()) > 0 && br.GetFieldViolations()[0].GetField() == field {
			return
		}
	}
	t.Errorf("%v: want a field violation on %s", err, field)
}

// An import's answer stays small whatever the stream holds (counts and the first 100 failures,
// never one result per item), and a stream over the item limit fails before anything is
// written.
func TestImportUsersBoundedAnswer(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		invalid int
		limit   int
		want    codes.Code
	}{
		{name: "many invalid items", invalid: 5000, limit: 10000, want: codes.OK},
		{name: "over the item limit", invalid: 5000, limit: 1000, want: codes.ResourceExhausted},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, admin := importClient(t, grpcapi.WithImportMaxItems(tt.limit))
			stream, err := c.ImportUsers(admin)
			if err != nil {
				t.Fatal(err)
			}
			valid := &userv1.CreateUserRequest{Email: "valid@example.com", Username: "valid", Password: "correct horse", GivenName: "V"}
			if err := stream.Send(&userv1.ImportUsersRequest{User: valid}); err != nil {
				t.Fatal(err)
			}
			bad := &userv1.ImportUsersRequest{User: &userv1.CreateUserRequest{Email: "not an email", Username: "x", Password: "correct horse", GivenName: "X"}}
			for i := 0; i < tt.invalid; i++ {
				if err := stream.Send(bad); err != nil {
					break // the server answered early (over the limit): CloseAndRecv has it
				}
			}
			summary, err := stream.CloseAndRecv()
			code(t, err, tt.want)
			_, getErr := c.GetUser(admin, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "valid"}})
			if tt.want != codes.OK {
				if limit := exhaustedLimit(err); limit != "import_items_per_stream" {
					t.Errorf("limit named %q, want import_items_per_stream: %v", limit, err)
				}
				code(t, getErr, codes.NotFound) // nothing was written
				return
			}
			if getErr != nil {
				t.Errorf("the valid account was not created: %v", getErr)
			}
			if summary.GetCreatedCount() != 1 || summary.GetFailedCount() != int64(tt.invalid) || len(summary.GetErrors()) != 100 ||
				summary.GetErrors()[0].GetIndex() != 1 || summary.GetErrors()[99].GetIndex() != 100 {
				t.Errorf("summary: created %d, failed %d, %d errors (first %v), want 1, %d, the first 100", summary.GetCreatedCount(),
					summary.GetFailedCount(), len(summary.GetErrors()), summary.GetErrors()[0], tt.invalid)
			}
			if size := proto.Size(summary); size > 32<<10 {
				t.Errorf("the answer is %d bytes: it grows with the stream", size)
			}
		})
	}
}

// importClient is newClient with opts, and a context carrying the admin's token.
func importClient(t *testing.T, opts ...grpcapi.Option) (userv1.UserServiceClient, context.Context) {
	t.Helper()
	c, _ := newReplicaAndStore(t, testkit.SQLitePath(t), testkit.NewKeys(t), opts...)
	return c, logIn(t, c, adminEmail).ctx
}

func exhaustedLimit(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()["limit"]
		}
	}
	return ""
}
