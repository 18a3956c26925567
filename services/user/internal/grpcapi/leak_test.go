package grpcapi_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// TestStoreFailureTextIsNotSent breaks the database under a running service: the client is told
// Internal and nothing of the store's error, over the real interceptor chain.
func TestStoreFailureTextIsNotSent(t *testing.T) {
	t.Parallel()
	c, users := newClientAndStore(t)
	ada := signUp(t, c, "ada@example.com", "ada")
	if err := users.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := c.GetUser(ada.ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: ada.user.GetId()}})
	st := status.Convert(err)
	if st.Code() != codes.Internal || st.Message() != "internal error" || len(st.Details()) != 0 {
		t.Errorf("GetUser on a closed database = %v, want Internal with nothing of the cause", err)
	}
	_, err = c.CreateUser(ada.ctx, &userv1.CreateUserRequest{Email: "bob@example.com", Username: "bob", Password: "correct horse", GivenName: "Bob"})
	if msg := status.Convert(err).Message(); status.Code(err) != codes.Internal || strings.Contains(msg, "sql") || strings.Contains(msg, "closed") {
		t.Errorf("CreateUser on a closed database = %v, want Internal with nothing of the cause", err)
	}
}
