package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"buf.build/go/protovalidate"
	"github.com/google/uuid"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/authz"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// BenchmarkChassis serves testkit's example GetUser over a real loopback socket, from a bare
// grpc-go server, from bare grpc-go with one concern of the chassis at a time, and from the whole
// chassis as shipped: production defaults (pkg/app's logger at the default level, its tracer
// provider with the environment of the run, auth on), so that each concern's time and allocations
// per call are visible side by side. The rate limits stay on, with rates the single client never
// reaches. Client and server share the process: B/op and allocs/op count both, and
// the client's share is bare's.
//
//	go test -run '^$' -bench Chassis -benchmem -count 6 ./pkg/server | benchstat -
func BenchmarkChassis(b *testing.B) {
	keys := testkit.NewKeys(b)
	token := keys.Token(b, uuid.NewString(), auth.RoleUser)
	cfg := testkit.TestConfig()
	def := server.DefaultConfig("127.0.0.1:0")
	cfg.LogLevel, cfg.LogFormat = def.LogLevel, def.LogFormat
	cfg.AddressRateLimit, cfg.AddressRateBurst = 1e9, 1e9
	cfg.RateLimit, cfg.RateBurst = 1e9, 1e9
	log, err := observability.NewLogger(io.Discard, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		b.Fatal(err)
	}
	tp, stop, err := observability.NewTracerProvider(b.Context(), "user", "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(stop)
	validator, err := protovalidate.New()
	if err != nil {
		b.Fatal(err)
	}
	policies := authz.NewTable()
	if err := policies.AddService(userv1.UserService_ServiceDesc.ServiceName); err != nil {
		b.Fatal(err)
	}
	warn, err := observability.NewLogger(io.Discard, "warn", cfg.LogFormat)
	if err != nil {
		b.Fatal(err)
	}
	chassis := func(log *slog.Logger) func(net.Listener) {
		return func(lis net.Listener) {
			srv, err := server.New("user", cfg, log, server.WithListener(lis), server.WithVerifier(keys.Verifier(b)), server.WithTracerProvider(tp))
			if err != nil {
				b.Fatal(err)
			}
			if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("chassis")); err != nil {
				b.Fatal(err)
			}
			go func() { _ = srv.Serve() }()
			b.Cleanup(func() { srv.GracefulStop(0) })
		}
	}
	bare := func(opts ...grpc.ServerOption) func(net.Listener) {
		return func(lis net.Listener) {
			srv := grpc.NewServer(opts...)
			userv1.RegisterUserServiceServer(srv, testkit.NewExampleUsers("bare"))
			go func() { _ = srv.Serve(lis) }()
			b.Cleanup(srv.Stop)
		}
	}
	one := func(s ...interceptors.Server) func(net.Listener) { return bare(interceptors.ServerChain(s...)...) }
	metrics := interceptors.NewServerMetrics()
	prometheus.NewRegistry().MustRegister(metrics)
	provider := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	prometheus.NewRegistry().MustRegister(provider)
	for _, c := range []struct {
		name  string
		serve func(net.Listener)
	}{
		{"bare", bare()},
		{"logging", one(interceptors.Logging(log, interceptors.WithSampling(def.LogSample, def.LogSlow)))},
		// -log-sample 1: a line for every call, the default before sampling.
		{"logging-all", one(interceptors.Logging(log))},
		{"tracing", bare(server.Tracing(tp)...)},
		{"requestid", one(interceptors.RequestID())},
		{"metrics", one(metrics.Server())},
		// go-grpc-middleware's providers/prometheus, which the chassis used before Metrics.
		{"metrics-provider", one(interceptors.Server{Unary: provider.UnaryServerInterceptor(), Stream: provider.StreamServerInterceptor()})},
		{"validate", one(interceptors.Validate(validator))},
		{"auth", one(interceptors.Identify(keys.Verifier(b), nil, log), policies.Interceptor())},
		{"chassis", chassis(log)},
		// At warn, as the platform's rig (tools/loadkit) runs: no line for a call that succeeds.
		{"chassis-warn", chassis(warn)},
	} {
		b.Run(c.name, func(b *testing.B) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			c.serve(lis)
			cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			client := userv1.NewUserServiceClient(cc)
			ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
			req := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
			if _, err := client.GetUser(ctx, req); err != nil { // connect, and check it works
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.GetUser(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
