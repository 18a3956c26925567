package authz_test

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	_ "google.golang.org/protobuf/types/known/emptypb" // google/protobuf/empty.proto, for the test service

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/authz"
	authzv1 "github.com/meshmart/meshmart/proto/meshmart/authz/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// service builds the descriptor of meshmart.test.v1.Test, whose methods declare policies (a nil
// policy declares none).
func service(t *testing.T, policies map[string]*authzv1.Policy) protoreflect.ServiceDescriptor {
	t.Helper()
	sd := &descriptorpb.ServiceDescriptorProto{Name: proto.String("Test")}
	for name, p := range policies {
		opts := &descriptorpb.MethodOptions{}
		if p != nil {
			proto.SetExtension(opts, authzv1.E_Policy, p)
		}
		sd.Method = append(sd.Method, &descriptorpb.MethodDescriptorProto{
			Name: proto.String(name), InputType: proto.String(".google.protobuf.Empty"),
			OutputType: proto.String(".google.protobuf.Empty"), Options: opts,
		})
	}
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("meshmart/test/v1/test.proto"), Package: proto.String("meshmart.test.v1"), Syntax: proto.String("proto3"),
		Dependency: []string{"google/protobuf/empty.proto"}, Service: []*descriptorpb.ServiceDescriptorProto{sd},
	}, protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	return fd.Services().Get(0)
}

var (
	nobody   = auth.Identity{}
	user     = auth.Identity{Subject: "u1", Roles: []string{auth.RoleUser}}
	admin    = auth.Identity{Subject: "a1", Roles: []string{auth.RoleUser, auth.RoleAdmin}}
	order    = auth.Identity{Service: "order"}
	payment  = auth.Identity{Service: "payment"}
	userViaO = auth.Identity{Subject: "u1", Roles: []string{auth.RoleUser}, Service: "order"}
)

func TestInterceptor(t *testing.T) {
	t.Parallel()
	table := authz.NewTable()
	if err := table.Add(service(t, map[string]*authzv1.Policy{
		"Public":        {Public: true},
		"Users":         {Users: true},
		"Admins":        {Admins: true},
		"OrderOnly":     {Services: []string{"order"}},
		"UsersAndOrder": {Users: true, Services: []string{"order"}},
		"AdminsOrOrder": {Admins: true, Services: []string{"order"}},
		"Nobody":        {},
	})); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method string
		caller auth.Identity
		want   codes.Code
	}{
		{"Public", nobody, codes.OK},
		{"Public", user, codes.OK},
		{"Users", nobody, codes.Unauthenticated},
		{"Users", user, codes.OK},
		{"Users", admin, codes.OK},
		{"Users", order, codes.PermissionDenied},
		{"Users", userViaO, codes.OK},
		{"Admins", nobody, codes.Unauthenticated},
		{"Admins", user, codes.PermissionDenied},
		{"Admins", admin, codes.OK},
		{"Admins", order, codes.PermissionDenied},
		{"OrderOnly", nobody, codes.Unauthenticated},
		{"OrderOnly", user, codes.PermissionDenied},
		{"OrderOnly", admin, codes.PermissionDenied},
		{"OrderOnly", order, codes.OK},
		{"OrderOnly", userViaO, codes.OK},
		{"OrderOnly", payment, codes.PermissionDenied},
		{"UsersAndOrder", user, codes.OK},
		{"UsersAndOrder", order, codes.OK},
		{"UsersAndOrder", payment, codes.PermissionDenied},
		{"AdminsOrOrder", user, codes.PermissionDenied},
		{"AdminsOrOrder", admin, codes.OK},
		{"AdminsOrOrder", userViaO, codes.OK},
		{"Nobody", admin, codes.PermissionDenied},
		{"Nobody", order, codes.PermissionDenied},
		{"Undeclared", nobody, codes.Unauthenticated},
		{"Undeclared", admin, codes.PermissionDenied},
		{"Undeclared", order, codes.PermissionDenied},
		{"/grpc.health.v1.Health/Check", nobody, codes.OK},
		{"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", nobody, codes.OK},
		{"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", nobody, codes.OK},
	}
	ic := table.Interceptor()
	for _, tt := range tests {
		method := tt.method
		if !strings.HasPrefix(method, "/") {
			method = "/meshmart.test.v1.Test/" + method
		}
		ctx := context.Background()
		if tt.caller.IsUser() || tt.caller.IsService() {
			ctx = auth.NewContext(ctx, tt.caller)
		}
		name := method + " by " + describe(tt.caller)
		t.Run("unary "+name, func(t *testing.T) {
			t.Parallel()
			called := false
			_, err := ic.Unary(ctx, nil, &grpc.UnaryServerInfo{FullMethod: method}, func(context.Context, any) (any, error) {
				called = true
				return nil, nil
			})
			check(t, err, called, tt.want)
		})
		t.Run("stream "+name, func(t *testing.T) {
			t.Parallel()
			called := false
			err := ic.Stream(nil, stream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: method}, func(any, grpc.ServerStream) error {
				called = true
				return nil
			})
			check(t, err, called, tt.want)
		})
	}
}

func check(t *testing.T, err error, called bool, want codes.Code) {
	t.Helper()
	if status.Code(err) != want {
		t.Fatalf("got %v, want %v", err, want)
	}
	if called != (want == codes.OK) {
		t.Errorf("handler called = %v, want %v", called, want == codes.OK)
	}
	if err != nil && strings.Contains(status.Convert(err).Message(), "meshmart") {
		t.Errorf("the message names internals: %q", status.Convert(err).Message())
	}
}

func describe(id auth.Identity) string {
	switch {
	case id.IsUser() && id.IsService():
		return "a user via " + id.Service
	case id.IsService():
		return id.Service
	case id.IsAdmin():
		return "an admin"
	case id.IsUser():
		return "a user"
	}
	return "nobody"
}

type stream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s stream) Context() context.Context { return s.ctx }

func TestAddRefusesAnUndeclaredMethod(t *testing.T) {
	t.Parallel()
	table := authz.NewTable()
	err := table.Add(service(t, map[string]*authzv1.Policy{"Declared": {Users: true}, "Forgotten": nil}))
	if err == nil || !strings.Contains(err.Error(), "Forgotten") {
		t.Fatalf("Add = %v, want an error naming the undeclared method", err)
	}
	if _, ok := table.Policy("/meshmart.test.v1.Test/Declared"); ok {
		t.Errorf("a refused service's declared methods were added")
	}
}

func TestAddService(t *testing.T) {
	t.Parallel()
	table := authz.NewTable()
	if err := table.AddService(userv1.UserService_ServiceDesc.ServiceName); err != nil {
		t.Fatal(err)
	}
	p, ok := table.Policy(userv1.UserService_GetUser_FullMethodName)
	if !ok || !p.GetUsers() || len(p.GetServices()) != 1 || p.GetServices()[0] != "order" {
		t.Errorf("GetUser's policy = %v, %v", p, ok)
	}
	if err := table.AddService("meshmart.nowhere.v1.Nothing"); err == nil {
		t.Errorf("AddService of a service that is not linked in succeeded")
	}
}
