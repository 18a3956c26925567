package testkit

import (
	"context"
	"fmt"
	"sync"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/interceptors"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// ServedByKey is the response header in which the example service names the instance that
// answered.
const ServedByKey = "x-served-by"

// PanicUsername makes the example's GetUser panic, to exercise recovery.
const PanicUsername = "panic-now"

// ExampleUsers is a tiny in-memory implementation of part of user.v1.UserService, for testing the
// chassis: GetUser (idempotent), CreateUser (not idempotent) and ExportUsers (a server stream that
// runs until cancelled). Every answer names the instance in the x-served-by header. The real user
// service lives in services/user.
type ExampleUsers struct {
	userv1.UnimplementedUserServiceServer

	// Instance names this instance in x-served-by.
	Instance string

	mu      sync.Mutex
	created map[string]int // request id -> CreateUser calls with it
}

var _ userv1.UserServiceServer = (*ExampleUsers)(nil)

// NewExampleUsers returns an example service called instance.
func NewExampleUsers(instance string) *ExampleUsers {
	return &ExampleUsers{Instance: instance, created: map[string]int{}}
}

func (e *ExampleUsers) servedBy(ctx context.Context) {
	_ = grpc.SetHeader(ctx, metadata.Pairs(ServedByKey, e.Instance))
}

// GetUser answers any lookup with a user whose id is the caller's subject (when authenticated)
// and whose given name is the instance's name.
func (e *ExampleUsers) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	e.servedBy(ctx)
	if req.GetUsername() == PanicUsername {
		panic("example: asked to panic")
	}
	id := uuid.NewString()
	if who, ok := auth.FromContext(ctx); ok {
		id = who.Subject
	}
	return &userv1.GetUserResponse{User: &userv1.User{Id: id, GivenName: e.Instance, Username: req.GetUsername()}}, nil
}

// CreateUser records how often it saw each request id, so tests can prove a call was never
// repeated.
func (e *ExampleUsers) CreateUser(ctx context.Context, req *userv1.CreateUserRequest) (*userv1.CreateUserResponse, error) {
	e.servedBy(ctx)
	e.mu.Lock()
	e.created[interceptors.RequestIDFromContext(ctx)]++
	e.mu.Unlock()
	return &userv1.CreateUserResponse{User: &userv1.User{Id: uuid.NewString(), Email: req.GetEmail(), Username: req.GetUsername(), GivenName: e.Instance}}, nil
}

// Created returns how often CreateUser saw each request id.
func (e *ExampleUsers) Created() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]int, len(e.created))
	for k, v := range e.created {
		out[k] = v
	}
	return out
}

// ExportUsers sends one user, then waits until the stream's context ends, as a long-lived stream
// does.
func (e *ExampleUsers) ExportUsers(_ *userv1.ExportUsersRequest, stream grpc.ServerStreamingServer[userv1.ExportUsersResponse]) error {
	e.servedBy(stream.Context())
	if err := stream.Send(&userv1.ExportUsersResponse{User: &userv1.User{Id: uuid.NewString(), GivenName: e.Instance}}); err != nil {
		return err
	}
	<-stream.Context().Done()
	return status.FromContextError(stream.Context().Err()).Err()
}

// Describe is a one-line description for logs.
func (e *ExampleUsers) String() string { return fmt.Sprintf("example users %q", e.Instance) }
