// Package authz enforces who may call each method, as the contracts declare it: every method of a
// meshmart service carries a meshmart.authz.v1.Policy in its options, and the chassis checks the
// caller's auth.Identity against it before the handler runs, for unary and streaming calls alike.
// Services write no per-method checks of the caller's kind or role; they keep only the rules of
// their domain (whose resources a user may touch, which fields they may change).
//
// A Table maps full method names to policies. Add reads a service's policies from its protobuf
// descriptor and refuses a service with an undeclared method, so such a method is never served;
// Interceptor denies any method the table does not hold, and always lets health checking and
// reflection through.
package authz

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/interceptors"
	authzv1 "github.com/meshmart/meshmart/proto/meshmart/authz/v1"
)

// The errors callers see; they name no internals.
var (
	errUnauthenticated = status.Error(codes.Unauthenticated, "this method needs an access token or a service certificate")
	errDenied          = status.Error(codes.PermissionDenied, "the caller may not call this method")
)

// Table maps full method names ("/meshmart.user.v1.UserService/GetUser") to their declared
// policies. Fill it with Add before serving; reading it while serving needs no lock, since it no
// longer changes. The zero value is not usable: use NewTable.
type Table struct {
	policies map[string]*authzv1.Policy
}

// NewTable returns an empty table, which denies every method but health checking and reflection.
func NewTable() *Table { return &Table{policies: map[string]*authzv1.Policy{}} }

// AddService adds the policies of the service called name ("meshmart.user.v1.UserService"), found
// in protoregistry.GlobalFiles, where the generated code of every linked contract registers
// itself. See Add.
func (t *Table) AddService(name string) error {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
	if err != nil {
		return fmt.Errorf("authz: service %s: no descriptor is linked in: %w", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return fmt.Errorf("authz: %s is not a service", name)
	}
	return t.Add(sd)
}

// Add adds the policy of every method of sd. It fails, adding nothing, when a method declares no
// (meshmart.authz.v1.policy): a method nobody said who may call is never served.
func (t *Table) Add(sd protoreflect.ServiceDescriptor) error {
	methods := sd.Methods()
	add := make(map[string]*authzv1.Policy, methods.Len())
	var undeclared []string
	for i := range methods.Len() {
		m := methods.Get(i)
		opts := m.Options()
		if opts == nil || !proto.HasExtension(opts, authzv1.E_Policy) {
			undeclared = append(undeclared, string(m.Name()))
			continue
		}
		add["/"+string(sd.FullName())+"/"+string(m.Name())] = proto.GetExtension(opts, authzv1.E_Policy).(*authzv1.Policy)
	}
	if len(undeclared) > 0 {
		return fmt.Errorf("authz: %s: methods %s declare no (meshmart.authz.v1.policy)", sd.FullName(), strings.Join(undeclared, ", "))
	}
	for k, v := range add {
		t.policies[k] = v
	}
	return nil
}

// Policy returns the policy declared for fullMethod, and whether there is one.
func (t *Table) Policy(fullMethod string) (*authzv1.Policy, bool) {
	p, ok := t.policies[fullMethod]
	return p, ok
}

// Check decides whether the caller of fullMethod, whose identity ctx carries (auth.NewContext),
// may call it: nil when it may, Unauthenticated when the call carries neither a user token nor a
// service identity, PermissionDenied otherwise (and for a method the table does not hold).
func (t *Table) Check(ctx context.Context, fullMethod string) error {
	if alwaysPublic(fullMethod) {
		return nil
	}
	p, ok := t.policies[fullMethod]
	if ok && p.GetPublic() {
		return nil
	}
	id, _ := auth.FromContext(ctx)
	if !id.IsUser() && !id.IsService() {
		return errUnauthenticated
	}
	if ok && Allows(p, id) {
		return nil
	}
	return errDenied
}

// Allows reports whether p lets id call: p is public; id is a service p names; id is a user and
// p admits users; or id is a user holding the admin role and p admits admins.
func Allows(p *authzv1.Policy, id auth.Identity) bool {
	switch {
	case p.GetPublic():
		return true
	case id.IsService() && slices.Contains(p.GetServices(), id.Service):
		return true
	case id.IsUser() && p.GetUsers():
		return true
	case id.IsUser() && id.IsAdmin() && p.GetAdmins():
		return true
	}
	return false
}

// Interceptor enforces the table on every call, unary and streaming, before the handler runs. It
// reads the identity an identifying interceptor earlier in the chain stored
// (interceptors.Identify).
func (t *Table) Interceptor() interceptors.Server {
	return interceptors.Server{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := t.Check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := t.Check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		},
	}
}

// alwaysPublic reports the infrastructure methods anyone may call: health checking, which
// Consul and the probes use without credentials, and reflection, which grpcurl uses.
func alwaysPublic(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}
