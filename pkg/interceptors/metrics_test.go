package interceptors_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// testService answers the four kinds of RPC of grpc's interop TestService. A UnaryCall asking
// for a response of failSize bytes fails with InvalidArgument, and a FullDuplexCall message
// asking for failSize responses ends its stream with FailedPrecondition.
type testService struct {
	testgrpc.UnimplementedTestServiceServer
}

var _ testgrpc.TestServiceServer = testService{}

const failSize = 13

func (testService) UnaryCall(_ context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if req.GetResponseSize() == failSize {
		return nil, status.Error(codes.InvalidArgument, "size")
	}
	return &testgrpc.SimpleResponse{}, nil
}

func (testService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	for range req.GetResponseParameters() {
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
	return nil
}

func (testService) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	n := 0
	for {
		if _, err := stream.Recv(); errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		} else if err != nil {
			return err
		}
		n++
	}
}

func (testService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if len(req.GetResponseParameters()) == failSize {
			return status.Error(codes.FailedPrecondition, "parameters")
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
	}
}

// Metrics exports exactly the series go-grpc-middleware's providers/prometheus exports, with
// their values, for the same calls of every kind, succeeding and failing, server and client side
// (the handling-time histograms' counts compared, their timings not).
func TestMetricsAsProvider(t *testing.T) {
	t.Parallel()
	provider := prometheus.NewRegistry()
	ps, pc := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()), grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram())
	provider.MustRegister(ps, pc)
	providerCalls := serveTest(t,
		interceptors.Server{Unary: ps.UnaryServerInterceptor(), Stream: ps.StreamServerInterceptor()},
		interceptors.Client{Unary: pc.UnaryClientInterceptor(), Stream: pc.StreamClientInterceptor()},
		ps.InitializeMetrics)

	ours := prometheus.NewRegistry()
	ms, mc := interceptors.NewServerMetrics(), interceptors.NewClientMetrics()
	ours.MustRegister(ms, mc)
	ourCalls := serveTest(t, ms.Server(), mc.Client(), ms.InitializeMetrics)

	if before := exposition(t, ours); !strings.Contains(before, `grpc_server_started_total{grpc_method="FullDuplexCall",grpc_service="grpc.testing.TestService",grpc_type="bidi_stream"} 0`) {
		t.Errorf("InitializeMetrics left out a served method's series:\n%s", before)
	}
	providerCalls(t)
	ourCalls(t)
	want, got := exposition(t, provider), exposition(t, ours)
	if got != want {
		t.Errorf("Metrics exported\n%s\nwant, as providers/prometheus exported\n%s", got, want)
	}
	for _, series := range []string{
		`grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="UnaryCall",grpc_service="grpc.testing.TestService",grpc_type="unary"} 1`,
		`grpc_client_msg_received_total{grpc_method="StreamingOutputCall",grpc_service="grpc.testing.TestService",grpc_type="server_stream"} 3`,
		`grpc_server_handled_total{grpc_code="FailedPrecondition",grpc_method="FullDuplexCall",grpc_service="grpc.testing.TestService",grpc_type="bidi_stream"} 1`,
	} {
		if !strings.Contains(got, series) {
			t.Errorf("the calls were not counted: no %s in\n%s", series, got)
		}
	}
}

// serveTest serves testService over bufconn behind server, dials it through client, calls
// initialize with the server, and returns the calls to make: each kind of RPC, succeeding and
// failing.
func serveTest(t *testing.T, server interceptors.Server, client interceptors.Client, initialize func(reflection.ServiceInfoProvider)) func(*testing.T) {
	lis := bufconn.Listen(1 << 16)
	srv := grpc.NewServer(interceptors.ServerChain(server)...)
	testgrpc.RegisterTestServiceServer(srv, testService{})
	initialize(srv)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet", append(interceptors.ClientChain(client),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	c := testgrpc.NewTestServiceClient(cc)
	return func(t *testing.T) {
		ctx := t.Context()
		for _, size := range []int32{1, 1, failSize} {
			_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{ResponseSize: size})
			if want := map[bool]codes.Code{true: codes.InvalidArgument, false: codes.OK}[size == failSize]; status.Code(err) != want {
				t.Fatalf("UnaryCall(%d): %v, want %v", size, err, want)
			}
		}
		out, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: make([]*testgrpc.ResponseParameters, 3)})
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = out.Recv()
		}
		if !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		in, err := c.StreamingInputCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if err := in.Send(&testgrpc.StreamingInputCallRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := in.CloseAndRecv(); err != nil {
			t.Fatal(err)
		}
		bidi, err := c.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, failSize} {
			if err := bidi.Send(&testgrpc.StreamingOutputCallRequest{ResponseParameters: make([]*testgrpc.ResponseParameters, n)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := bidi.Recv(); err != nil {
			t.Fatal(err)
		}
		if _, err := bidi.Recv(); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("FullDuplexCall: %v, want FailedPrecondition", err)
		}
	}
}

// exposition is reg's metrics in Prometheus' text format, the handling-time histograms' sums and
// buckets cleared (they hold timings; their counts stay).
func exposition(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				h.SampleSum = new(float64)
				for _, bucket := range h.GetBucket() {
					bucket.CumulativeCount = new(uint64)
				}
				h.CreatedTimestamp = nil
			}
			if c := m.GetCounter(); c != nil {
				c.CreatedTimestamp = nil
			}
		}
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// BenchmarkMetrics is the cost of reporting one unary call, against go-grpc-middleware's
// providers/prometheus (BENCHMARKS.md, "Metrics"):
//
//	go test -run '^$' -bench Metrics -benchmem -count 6 ./interceptors | benchstat -col /reporter -
func BenchmarkMetrics(b *testing.B) {
	provider := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	ours := interceptors.NewServerMetrics()
	prometheus.NewRegistry().MustRegister(provider)
	prometheus.NewRegistry().MustRegister(ours) // the same names: a registry each
	info := &grpc.UnaryServerInfo{FullMethod: "/meshmart.user.v1.UserService/GetUser"}
	handler := func(_ context.Context, req any) (any, error) { return req, nil }
	for _, c := range []struct {
		name  string
		unary grpc.UnaryServerInterceptor
	}{{"reporter=provider", provider.UnaryServerInterceptor()}, {"reporter=metrics", ours.Server().Unary}} {
		b.Run(c.name, func(b *testing.B) {
			ctx := b.Context()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.unary(ctx, nil, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
