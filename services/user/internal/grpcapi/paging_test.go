package grpcapi_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// TestPageTokens pages through accounts across two replicas sharing one database, each page asked
// of the replica that did not issue its token; a token reused with another filter, or edited, is
// an InvalidArgument naming page_token.
func TestPageTokens(t *testing.T) {
	t.Parallel()
	path, keys := testkit.SQLitePath(t), testkit.NewKeys(t)
	replicas := []userv1.UserServiceClient{newReplica(t, path, keys), newReplica(t, path, keys)}
	admin := logIn(t, replicas[0], adminEmail)
	for i := range 4 {
		signUp(t, replicas[i%2], fmt.Sprintf("u%d@example.com", i), fmt.Sprint("user", i))
	}
	var names []string
	tokens := []string{""}
	for i := 0; i == 0 || tokens[i] != ""; i++ {
		page, err := replicas[i%2].ListUsers(admin.ctx, &userv1.ListUsersRequest{PageSize: 2, PageToken: tokens[i]})
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		for _, u := range page.GetUsers() {
			names = append(names, u.GetUsername())
		}
		tokens = append(tokens, page.GetNextPageToken())
	}
	if len(names) != 5 {
		t.Errorf("listed %v, want 5 accounts", names)
	}

	bad := []*userv1.ListUsersRequest{{PageToken: tokens[1], Status: userv1.UserStatus_USER_STATUS_SUSPENDED}}
	for _, token := range testkit.TamperedTokens(tokens[1]) {
		bad = append(bad, &userv1.ListUsersRequest{PageToken: token})
	}
	for _, req := range bad {
		_, err := replicas[1].ListUsers(admin.ctx, req)
		if !slices.Equal(testkit.InvalidFields(err), []string{"page_token"}) {
			t.Errorf("ListUsers(%v) = %v, want InvalidArgument on page_token", req, err)
		}
	}
}
