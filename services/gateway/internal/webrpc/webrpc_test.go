package webrpc_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/gateway/internal/webrpc"
)

const userID = "0b7e7c3e-5a0e-4f55-9d3c-2f5a4c1b8e01"

// recordingUsers is the example user service, recording the metadata GetUser receives and
// signalling when an export ends, so tests see what reached the service and when.
type recordingUsers struct {
	*testkit.ExampleUsers

	mu       sync.Mutex
	incoming metadata.MD
	exported chan error // one value per ExportUsers call, when it returns
}

func (r *recordingUsers) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.incoming = md.Copy()
	r.mu.Unlock()
	return r.ExampleUsers.GetUser(ctx, req)
}

func (r *recordingUsers) ExportUsers(req *userv1.ExportUsersRequest, stream grpc.ServerStreamingServer[userv1.ExportUsersResponse]) error {
	err := r.ExampleUsers.ExportUsers(req, stream)
	r.exported <- err
	return err
}

func (r *recordingUsers) lastIncoming() metadata.MD {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.incoming
}

// countingConn stands in for a service the tests must prove is, or is not, called: every call
// is counted and fails with Unavailable.
type countingConn struct {
	mu    sync.Mutex
	calls []string
}

func (c *countingConn) Invoke(_ context.Context, method string, _, _ any, _ ...grpc.CallOption) error {
	c.record(method)
	return status.Error(codes.Unavailable, "counting conn")
}

func (c *countingConn) NewStream(_ context.Context, _ *grpc.StreamDesc, method string, _ ...grpc.CallOption) (grpc.ClientStream, error) {
	c.record(method)
	return nil, status.Error(codes.Unavailable, "counting conn")
}

func (c *countingConn) record(method string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, method)
}

func (c *countingConn) Calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.calls...)
}

type fixture struct {
	url      string
	users    *recordingUsers
	payments *countingConn
	keys     testkit.Keys
}

// start serves the example user service behind the chassis' interceptor chain (authentication,
// authorization, validation) on a loopback socket, and the gateway's handler in front of it in an
// httptest server; the payment service is a countingConn.
func start(t *testing.T) fixture {
	t.Helper()
	keys := testkit.NewKeys(t)
	cfg := testkit.TestConfig()
	cfg.AuthPublicKey = keys.PublicKeyFile
	srv, err := server.New("user", cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	users := &recordingUsers{ExampleUsers: testkit.NewExampleUsers("user-1"), exported: make(chan error, 4)}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, users); err != nil {
		t.Fatal(err)
	}
	running := testkit.Serve(t, srv)
	conn, err := grpc.NewClient(running.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })

	payments := &countingConn{}
	h, err := webrpc.New(webrpc.Conns{
		"meshmart.user.v1.UserService":       conn,
		"meshmart.payment.v1.PaymentService": payments,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return fixture{url: hs.URL, users: users, payments: payments, keys: keys}
}

// protocols are the client modes a browser library speaks.
var protocols = []struct {
	name string
	opts []connect.ClientOption
}{
	{"grpc-web", []connect.ClientOption{connect.WithGRPCWeb()}},
	{"connect-proto", nil},
	{"connect-json", []connect.ClientOption{connect.WithProtoJSON()}},
}

func TestUnaryForwardsAllowListedHeaders(t *testing.T) {
	t.Parallel()
	f := start(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			client := connect.NewClient[userv1.GetUserRequest, userv1.GetUserResponse](
				http.DefaultClient, f.url+userv1.UserService_GetUser_FullMethodName, p.opts...)
			req := connect.NewRequest(&userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}})
			req.Header().Set("Authorization", "Bearer "+f.keys.Token(t, userID, "user"))
			req.Header().Set("X-Request-Id", "req-"+p.name)
			req.Header().Set("Traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			req.Header().Set("X-Forwarded-For", "203.0.113.7")
			req.Header().Set("Cookie", "session=secret")
			req.Header().Set("X-Meshmart-Service", "payment")

			res, err := client.CallUnary(t.Context(), req)
			if err != nil {
				t.Fatalf("GetUser: %v", err)
			}
			// The service saw the token: the example answers with the caller's subject.
			if got := res.Msg.GetUser(); got.GetId() != userID || got.GetGivenName() != "user-1" || got.GetUsername() != "ada" {
				t.Errorf("GetUser = %v, want id %s from user-1 for ada", got, userID)
			}

			md := f.users.lastIncoming()
			if got := md.Get("x-request-id"); len(got) != 1 || got[0] != "req-"+p.name {
				t.Errorf("x-request-id at the service = %q", got)
			}
			if got := md.Get("traceparent"); len(got) != 1 || !strings.HasPrefix(got[0], "00-4bf92f35") {
				t.Errorf("traceparent at the service = %q", got)
			}
			if got := md.Get("x-forwarded-for"); len(got) != 1 || got[0] != "203.0.113.7, 127.0.0.1" {
				t.Errorf("x-forwarded-for at the service = %q, want the client's chain then the address the gateway saw", got)
			}
			for _, k := range []string{"cookie", "x-meshmart-service"} {
				if got := md.Get(k); len(got) > 0 {
					t.Errorf("header %s reached the service: %q", k, got)
				}
			}
		})
	}
}

func TestServerStreamEndsUpstreamWhenClientLeaves(t *testing.T) {
	t.Parallel()
	f := start(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			client := connect.NewClient[userv1.ExportUsersRequest, userv1.ExportUsersResponse](
				http.DefaultClient, f.url+userv1.UserService_ExportUsers_FullMethodName, p.opts...)
			req := connect.NewRequest(&userv1.ExportUsersRequest{})
			req.Header().Set("Authorization", "Bearer "+f.keys.Token(t, userID, "admin"))

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			stream, err := client.CallServerStream(ctx, req)
			if err != nil {
				t.Fatalf("ExportUsers: %v", err)
			}
			if !stream.Receive() {
				t.Fatalf("ExportUsers: no message: %v", stream.Err())
			}
			if got := stream.Msg().GetUser().GetGivenName(); got != "user-1" {
				t.Errorf("exported user's given name = %q, want user-1", got)
			}
			// The example keeps the stream open until its context ends: leaving must end it.
			cancel()
			_ = stream.Close()
			select {
			case err := <-f.users.exported:
				if status.Code(err) != codes.Canceled {
					t.Errorf("ExportUsers ended with %v, want Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the service's stream did not end within 10s of the client leaving")
			}
		})
	}
}

func TestErrorKeepsCodeAndDetails(t *testing.T) {
	t.Parallel()
	f := start(t)
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			client := connect.NewClient[userv1.CreateUserRequest, userv1.CreateUserResponse](
				http.DefaultClient, f.url+userv1.UserService_CreateUser_FullMethodName, p.opts...)
			_, err := client.CallUnary(t.Context(), connect.NewRequest(&userv1.CreateUserRequest{Email: "not-an-email", Username: "ada", GivenName: "Ada", Password: "long enough"}))
			var cerr *connect.Error
			if !errors.As(err, &cerr) || cerr.Code() != connect.CodeInvalidArgument {
				t.Fatalf("CreateUser with a bad email = %v, want InvalidArgument", err)
			}
			var fields []string
			for _, d := range cerr.Details() {
				v, err := d.Value()
				if err != nil {
					t.Fatalf("detail %s: %v", d.Type(), err)
				}
				if br, ok := v.(*errdetails.BadRequest); ok {
					for _, fv := range br.GetFieldViolations() {
						fields = append(fields, fv.GetField())
					}
				}
			}
			if len(fields) != 1 || fields[0] != "email" {
				t.Errorf("BadRequest field violations = %q, want [email]", fields)
			}
		})
	}
}

func TestUnauthenticatedCallIsRefusedByTheService(t *testing.T) {
	t.Parallel()
	f := start(t)
	client := connect.NewClient[userv1.GetUserRequest, userv1.GetUserResponse](
		http.DefaultClient, f.url+userv1.UserService_GetUser_FullMethodName, connect.WithGRPCWeb())
	_, err := client.CallUnary(t.Context(), connect.NewRequest(&userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("GetUser without a token = %v, want Unauthenticated", err)
	}
}

func TestOnlyEdgeMethodsAreServed(t *testing.T) {
	t.Parallel()
	f := start(t)
	tests := []struct {
		method string
		served bool
	}{
		{paymentv1.PaymentService_GetPayment_FullMethodName, true},
		{paymentv1.PaymentService_WatchPayments_FullMethodName, true},
		{paymentv1.PaymentService_CreatePayment_FullMethodName, false},     // services only
		{paymentv1.PaymentService_ListPaymentEvents_FullMethodName, false}, // services only
		{userv1.UserService_ImportUsers_FullMethodName, false},             // client stream
		{"/meshmart.order.v1.OrderService/GetOrder", false},                // service not configured
	}
	for _, tt := range tests {
		t.Run(tt.method, func(t *testing.T) {
			before := len(f.payments.Calls())
			// One gRPC-Web frame holding an empty message, valid for unary and streaming methods.
			res, err := http.Post(f.url+tt.method, "application/grpc-web+proto", strings.NewReader("\x00\x00\x00\x00\x00"))
			if err != nil {
				t.Fatal(err)
			}
			_ = res.Body.Close()
			if tt.served {
				if res.StatusCode == http.StatusNotFound {
					t.Errorf("%s: 404, want it served", tt.method)
				}
				if len(f.payments.Calls()) != before+1 {
					t.Errorf("%s: the payment service was not called", tt.method)
				}
				return
			}
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("%s: HTTP %d, want 404", tt.method, res.StatusCode)
			}
		})
	}

	// A real client of the protocol reads the 404 as Unimplemented.
	client := connect.NewClient[paymentv1.CreatePaymentRequest, paymentv1.CreatePaymentResponse](
		http.DefaultClient, f.url+paymentv1.PaymentService_CreatePayment_FullMethodName, connect.WithGRPCWeb())
	_, err := client.CallUnary(t.Context(), connect.NewRequest(&paymentv1.CreatePaymentRequest{}))
	if connect.CodeOf(err) != connect.CodeUnimplemented {
		t.Errorf("CreatePayment over gRPC-Web = %v, want Unimplemented", err)
	}
	for _, m := range f.payments.Calls() {
		if m == paymentv1.PaymentService_CreatePayment_FullMethodName || m == paymentv1.PaymentService_ListPaymentEvents_FullMethodName {
			t.Errorf("a service-only method reached the payment service: %s", m)
		}
	}
}

func TestNewRefusesBadConns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		conns webrpc.Conns
	}{
		{"empty", webrpc.Conns{}},
		{"unknown service", webrpc.Conns{"meshmart.nope.v1.NopeService": &countingConn{}}},
		{"not a service", webrpc.Conns{"meshmart.user.v1.User": &countingConn{}}},
		{"nil connection", webrpc.Conns{"meshmart.user.v1.UserService": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := webrpc.New(tt.conns); err == nil {
				t.Error("New succeeded, want an error")
			}
		})
	}
}
