package server_test

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	oteltrace "go.opentelemetry.io/otel/trace"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	authzv1 "github.com/meshmart/meshmart/proto/meshmart/authz/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

const userID = "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90"

// chassis runs the example service over bufconn behind the full interceptor chain, with
// authentication on.
func chassis(t *testing.T, cfg server.Config, opts ...server.Option) (userv1.UserServiceClient, testkit.Keys, *testkit.Running) {
	t.Helper()
	keys := testkit.NewKeys(t)
	cfg.AuthPublicKey = keys.PublicKeyFile
	running, cc := testkit.Bufconn(t, func(lis net.Listener) *server.Server {
		opts = append(opts, server.WithListener(lis))
		srv, err := server.New("example", cfg, testkit.Logger(t), opts...)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
			t.Fatal(err)
		}
		return srv
	})
	return userv1.NewUserServiceClient(cc), keys, running
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func TestPanicBecomesInternal(t *testing.T) {
	t.Parallel()
	users, keys, _ := chassis(t, testkit.TestConfig())
	ctx := withToken(t.Context(), keys.Token(t, userID, "user"))

	_, err := users.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: testkit.PanicUsername}})
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "asked to panic") {
		t.Fatalf("GetUser that panics = %v, want Internal without the panic's text", err)
	}
	// The process, and the server, live on.
	if _, err := users.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}); err != nil {
		t.Fatalf("GetUser after a panic: %v", err)
	}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	users, keys, _ := chassis(t, testkit.TestConfig())
	otherKeys := testkit.NewKeys(t)
	get := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	tests := []struct {
		name string
		md   []string
		want codes.Code
	}{
		{"valid token", []string{"authorization", "Bearer " + keys.Token(t, userID, "user")}, codes.OK},
		{"missing token", nil, codes.Unauthenticated},
		{"not a bearer token", []string{"authorization", "Basic dXNlcjpwdw=="}, codes.Unauthenticated},
		{"garbage token", []string{"authorization", "Bearer not.a.token"}, codes.Unauthenticated},
		{"expired token", []string{"authorization", "Bearer " + keys.ExpiredToken(t, userID)}, codes.Unauthenticated},
		{"token signed by another key", []string{"authorization", "Bearer " + otherKeys.Token(t, userID, "admin")}, codes.Unauthenticated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := metadata.AppendToOutgoingContext(t.Context(), tt.md...)
			_, err := users.GetUser(ctx, get)
			if status.Code(err) != tt.want {
				t.Fatalf("GetUser = %v, want %v", err, tt.want)
			}
		})
	}
	t.Run("public method needs no token", func(t *testing.T) {
		t.Parallel()
		_, err := users.CreateUser(t.Context(), &userv1.CreateUserRequest{Email: "ada@example.com", Username: "ada", Password: "correct horse", GivenName: "Ada"})
		if err != nil {
			t.Fatalf("CreateUser without a token: %v", err)
		}
	})
}

func TestValidationReportsFieldViolations(t *testing.T) {
	t.Parallel()
	users, keys, _ := chassis(t, testkit.TestConfig())
	tests := []struct {
		name   string
		call   func(context.Context) error
		fields []string
	}{
		{"bad id", func(ctx context.Context) error {
			_, err := users.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: "42"}})
			return err
		}, []string{"id"}},
		{"bad sign-up", func(ctx context.Context) error {
			_, err := users.CreateUser(ctx, &userv1.CreateUserRequest{Email: "nope", Username: "ada", Password: "short", GivenName: "Ada"})
			return err
		}, []string{"email", "password"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.call(withToken(t.Context(), keys.Token(t, userID, "user")))
			st := status.Convert(err)
			if st.Code() != codes.InvalidArgument {
				t.Fatalf("code = %v, want InvalidArgument (%v)", st.Code(), err)
			}
			var got []string
			for _, d := range st.Details() {
				if br, ok := d.(*errdetails.BadRequest); ok {
					for _, v := range br.GetFieldViolations() {
						got = append(got, v.GetField())
					}
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.fields, ",") {
				t.Errorf("field violations = %q, want %q", got, tt.fields)
			}
		})
	}
}

func TestRateLimitPerClient(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.RateLimit, cfg.RateBurst = 0.001, 5 // five calls, then nothing for a long while
	users, keys, _ := chassis(t, cfg)
	get := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	greedy := withToken(t.Context(), keys.Token(t, userID, "user"))
	for i := range 5 {
		if _, err := users.GetUser(greedy, get); err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
	}
	if _, err := users.GetUser(greedy, get); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("call over the limit = %v, want ResourceExhausted", err)
	}
	other := withToken(t.Context(), keys.Token(t, "7c9e6679-7425-40de-944b-e07fc1f90ae7", "user"))
	if _, err := users.GetUser(other, get); err != nil {
		t.Fatalf("another client is limited separately, got %v", err)
	}
}

func TestMetricsExported(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.HTTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	users, keys, _ := chassis(t, cfg)
	ctx := withToken(t.Context(), keys.Token(t, userID, "user"))
	for range 3 {
		if _, err := users.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = users.GetUser(t.Context(), &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}})

	resp, err := http.Get("http://" + cfg.HTTPAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`grpc_server_handled_total{grpc_code="OK",grpc_method="GetUser",grpc_service="meshmart.user.v1.UserService",grpc_type="unary"} 3`,
		`grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="GetUser",grpc_service="meshmart.user.v1.UserService",grpc_type="unary"} 1`,
		`grpc_server_handling_seconds_bucket{grpc_method="GetUser"`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestTraceSpansClientAndServer(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	keys := testkit.NewKeys(t)
	cfg := testkit.TestConfig()
	cfg.AuthPublicKey = keys.PublicKeyFile
	srv, err := server.New("example", cfg, testkit.Logger(t), server.WithTracerProvider(tp))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
		t.Fatal(err)
	}
	running := testkit.Serve(t, srv)
	cc, err := client.Dial(running.Addr, testkit.Logger(t), client.WithTracerProvider(tp), client.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	ctx, root := tp.Tracer("test").Start(t.Context(), "root")
	_, err = userv1.NewUserServiceClient(cc).GetUser(withToken(ctx, keys.Token(t, userID, "user")),
		&userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}})
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	var clientSpan, serverSpan sdktrace.ReadOnlySpan
	deadline := time.Now().Add(5 * time.Second)
	for (clientSpan == nil || serverSpan == nil) && time.Now().Before(deadline) {
		for _, s := range rec.Ended() {
			switch s.SpanKind() {
			case oteltrace.SpanKindClient:
				clientSpan = s
			case oteltrace.SpanKindServer:
				serverSpan = s
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if clientSpan == nil || serverSpan == nil {
		t.Fatalf("spans: client %v, server %v", clientSpan, serverSpan)
	}
	if serverSpan.SpanContext().TraceID() != root.SpanContext().TraceID() || clientSpan.SpanContext().TraceID() != root.SpanContext().TraceID() {
		t.Errorf("client and server spans are not in the caller's trace")
	}
	if serverSpan.Parent().SpanID() != clientSpan.SpanContext().SpanID() {
		t.Errorf("the server span's parent is %s, want the client span %s", serverSpan.Parent().SpanID(), clientSpan.SpanContext().SpanID())
	}
}

func TestStreamsEndOnShutdown(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.DrainDelay = 200 * time.Millisecond
	users, keys, running := chassis(t, cfg)
	stream, err := users.ExportUsers(withToken(t.Context(), keys.Token(t, userID, "admin")), &userv1.ExportUsersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stopped := make(chan error, 1)
	go func() { stopped <- running.Stop() }()
	_, err = stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("stream during shutdown = %v, want Unavailable telling the client to reconnect", err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The stream ended at the drain delay, not at the shutdown timeout.
	if elapsed := time.Since(start); elapsed > cfg.ShutdownTimeout {
		t.Errorf("shutdown took %v, longer than the %v shutdown timeout", elapsed, cfg.ShutdownTimeout)
	}
}

func TestHealthTracksLifecycle(t *testing.T) {
	t.Parallel()
	cfg := testkit.TestConfig()
	cfg.DrainDelay = time.Second
	srv, err := server.New("example", cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
		t.Fatal(err)
	}
	running := testkit.Serve(t, srv)
	cc, err := grpc.NewClient(running.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	health := healthpb.NewHealthClient(cc)
	for _, svc := range []string{"", "meshmart.user.v1.UserService"} {
		resp, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health of %q = %v, %v; want SERVING", svc, resp, err)
		}
	}
	go func() { _ = running.Stop() }()
	// During the drain delay the server still answers, NOT_SERVING.
	deadline := time.Now().Add(cfg.DrainDelay)
	for time.Now().Before(deadline) {
		resp, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the server never reported NOT_SERVING while draining")
}

func TestMutualTLS(t *testing.T) {
	t.Parallel()
	pki := testkit.NewPKI(t, "example", "order")
	cfg := testkit.TestConfig()
	pki.Configure(&cfg, "example")
	srv, err := server.New("example", cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
		t.Fatal(err)
	}
	running := testkit.Serve(t, srv)
	stranger := testkit.NewPKI(t, "order") // another CA, same trust domain name

	tests := []struct {
		name string
		opts []client.Option
		ok   bool
	}{
		{"a service's certificate", []client.Option{pki.As("order")}, true},
		{"no client certificate (a user's client)", []client.Option{pki.Anonymous()}, true},
		{"plaintext", []client.Option{client.WithInsecure()}, false},
		{"the server is not the service asked for", []client.Option{pki.As("order"), client.WithServer("payment")}, false},
		{"a certificate of another CA", []client.Option{client.WithIdentity(stranger.Identity("order"))}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := append([]client.Option{client.WithServer("example")}, tt.opts...)
			cc, err := client.Dial(running.Addr, testkit.Logger(t), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			_, err = userv1.NewUserServiceClient(cc).GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}})
			if tt.ok && err != nil {
				t.Fatalf("GetUser: %v", err)
			}
			if !tt.ok && status.Code(err) != codes.Unavailable {
				t.Fatalf("GetUser = %v, want the handshake to fail (Unavailable)", err)
			}
		})
	}
}

// TestGRPCurl checks what a user of grpcurl sees: reflection lists and describes the services and
// the health service answers, over a real socket.
func TestGRPCurl(t *testing.T) {
	t.Parallel()
	srv, err := server.New("example", testkit.TestConfig(), testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
		t.Fatal(err)
	}
	running := testkit.Serve(t, srv)
	grpcurl := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("go", append([]string{"tool", "grpcurl", "-plaintext"}, append(args[:len(args)-1:len(args)-1], running.Addr, args[len(args)-1])...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"list"}, []string{"meshmart.user.v1.UserService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}},
		{[]string{"describe"}, []string{"rpc ExportUsers ( .meshmart.user.v1.ExportUsersRequest ) returns ( stream .meshmart.user.v1.ExportUsersResponse )", "rpc ImportUsers ( stream .meshmart.user.v1.ImportUsersRequest )"}},
		{[]string{"-d", `{"service":"meshmart.user.v1.UserService"}`, "grpc.health.v1.Health/Check"}, []string{`"status": "SERVING"`}},
		{[]string{"-d", `{"username":"ada"}`, "meshmart.user.v1.UserService/GetUser"}, []string{`"givenName": "only"`}},
	} {
		out := grpcurl(tt.args...)
		for _, want := range tt.want {
			if !strings.Contains(out, want) {
				t.Errorf("grpcurl %s: output lacks %q:\n%s", strings.Join(tt.args, " "), want, out)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		edit func(*server.Config)
	}{
		{"certificate without key", func(c *server.Config) { c.TLSCert = "cert.pem" }},
		{"CA without a certificate", func(c *server.Config) { c.TLSCA = "ca.pem" }},
		{"no TLS and no plaintext", func(c *server.Config) { c.InsecurePlaintext = false }},
		{"TLS files and plaintext", func(c *server.Config) { c.TLSCert, c.TLSKey, c.TLSCA = "c", "k", "ca" }},
		{"rate limit without burst", func(c *server.Config) { c.RateBurst = 0 }},
		{"no check interval", func(c *server.Config) { c.CheckInterval = 0 }},
		{"log sample over 1", func(c *server.Config) { c.LogSample = 1.5 }},
		{"negative log sample", func(c *server.Config) { c.LogSample = -0.1 }},
		{"log sample NaN", func(c *server.Config) { c.LogSample = math.NaN() }},
		{"negative slow call", func(c *server.Config) { c.LogSlow = -time.Second }},
	} {
		cfg := server.DefaultConfig(":50051")
		cfg.InsecurePlaintext = true // the defaults ask for TLS files: TestConfigNeedsTLS
		if err := cfg.Validate(); err != nil {
			t.Fatalf("the defaults do not validate: %v", err)
		}
		tt.edit(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s validated", tt.name)
		}
	}
}

func TestConfigNeedsTLS(t *testing.T) {
	t.Parallel()
	cfg := server.DefaultConfig(":50051")
	if err := cfg.Validate(); !errors.Is(err, server.ErrNoTLS) {
		t.Fatalf("the defaults validate to %v, want ErrNoTLS: TLS must never be off by default", err)
	}
	if _, err := server.New("example", cfg, testkit.Logger(t)); err == nil {
		t.Fatal("a server without TLS settings was built")
	}
}

// registerUndeclared links in a contract like the generated code registers, with one method
// declaring a policy and one declaring none. It runs once, as the package initializes, before any
// test: registering into GlobalFiles while a parallel test builds a validator deadlocks (cel-go's
// registerFiles takes the registry's read lock again inside RangeFiles, and a writer waiting
// between the two blocks both), and a second -count would register the file twice.
var _ = registerUndeclared()

func registerUndeclared() protoreflect.FileDescriptor {
	declared := &descriptorpb.MethodOptions{}
	proto.SetExtension(declared, authzv1.E_Policy, &authzv1.Policy{Users: true})
	fd, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("meshmart/servertest/v1/undeclared.proto"), Package: proto.String("meshmart.servertest.v1"),
		Syntax: proto.String("proto3"), Dependency: []string{"google/protobuf/empty.proto"},
		Service: []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("Undeclared"), Method: []*descriptorpb.MethodDescriptorProto{
			{Name: proto.String("Declared"), InputType: proto.String(".google.protobuf.Empty"), OutputType: proto.String(".google.protobuf.Empty"), Options: declared},
			{Name: proto.String("Forgotten"), InputType: proto.String(".google.protobuf.Empty"), OutputType: proto.String(".google.protobuf.Empty")},
		}}},
	}, protoregistry.GlobalFiles)
	if err != nil {
		panic(err)
	}
	if err := protoregistry.GlobalFiles.RegisterFile(fd); err != nil {
		panic(err)
	}
	return fd
}

// TestRegisterServiceRefusesAnUndeclaredMethod registers a service one of whose methods does not
// say who may call it: the server refuses it, so that the method is never served.
func TestRegisterServiceRefusesAnUndeclaredMethod(t *testing.T) {
	t.Parallel()
	handler := func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
		return &emptypb.Empty{}, nil
	}
	desc := &grpc.ServiceDesc{
		ServiceName: "meshmart.servertest.v1.Undeclared",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Declared", Handler: handler}, {MethodName: "Forgotten", Handler: handler}},
	}
	for _, tt := range []struct {
		name string
		desc *grpc.ServiceDesc
		want string
	}{
		{"an undeclared method", desc, "Forgotten"},
		{"a service whose contract is not linked in", &grpc.ServiceDesc{ServiceName: "meshmart.nowhere.v1.Nothing", HandlerType: (*any)(nil)}, "meshmart.nowhere.v1.Nothing"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, err := server.New("example", testkit.TestConfig(), testkit.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() })
			if err := srv.RegisterService(tt.desc, struct{}{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RegisterService = %v, want an error naming %s", err, tt.want)
			}
			// The same service passed to New as a second contract is refused the same way.
			if _, err := server.New("example", testkit.TestConfig(), testkit.Logger(t), server.WithService(tt.desc, struct{}{})); err == nil ||
				!strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New with WithService = %v, want an error naming %s", err, tt.want)
			}
		})
	}
}
