package testkit

import (
	"context"
	"encoding/hex"
	"net"
	"slices"
	"sync"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

// Traces is a real OTLP/gRPC trace receiver on loopback: processes started with its Env export
// their spans to it, and the tests read them back by trace id, to check that one trace spans
// several services. Each span is kept as "<service.name> <span name>"
// ("order meshmart.order.v1.OrderService/CreateOrder").
type Traces struct {
	coltracepb.UnimplementedTraceServiceServer

	srv  *grpc.Server
	addr string

	mu    sync.Mutex
	spans map[string][]string // by trace id, in hex
}

// StartTraces starts a receiver; Stop stops it.
func StartTraces() (*Traces, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &Traces{srv: grpc.NewServer(), addr: lis.Addr().String(), spans: map[string][]string{}}
	coltracepb.RegisterTraceServiceServer(t.srv, t)
	go func() { _ = t.srv.Serve(lis) }()
	return t, nil
}

// Env is the environment that makes a process (pkg/observability's tracer provider) export its
// spans to the receiver, every 100 ms instead of every 5 s so that tests wait little, and every
// trace rather than observability.DefaultSampleRatio of them, so that the trace a test follows is
// recorded.
func (t *Traces) Env() []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + t.addr, "OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_TRACES_SAMPLER=parentbased_always_on"}
}

// Stop stops the receiver.
func (t *Traces) Stop() { t.srv.Stop() }

// Export records the spans of an export.
func (t *Traces) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				id := hex.EncodeToString(sp.GetTraceId())
				t.spans[id] = append(t.spans[id], service+" "+sp.GetName())
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

// All returns a copy of every trace received so far, by trace id.
func (t *Traces) All() map[string][]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string][]string, len(t.spans))
	for id, s := range t.spans {
		out[id] = slices.Clone(s)
	}
	return out
}

// Trace returns the spans of one trace received so far.
func (t *Traces) Trace(id string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.spans[id])
}
