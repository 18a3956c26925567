package server_test

import (
	"log/slog"
	"regexp"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// Without a tracer provider (or with observability's when nothing is exported) the server starts
// no span, but a caller's W3C trace context reaches the call: its trace id is logged and is the
// call's request id when the caller sent none. A call outside any trace gets a random request id
// of the same form; a caller's own request id is kept.
func TestTraceContextAndRequestIDWithoutExporter(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	cfg := testkit.TestConfig()
	cfg.LogSample = 1 // every call's line, sampled trace or not
	_, running, cc := serveExample(t, cfg, log)
	client := userv1.NewUserServiceClient(cc)
	requestID := func(md ...string) string {
		t.Helper()
		var header metadata.MD
		ctx := metadata.AppendToOutgoingContext(t.Context(), md...)
		req := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
		if _, err := client.GetUser(ctx, req, grpc.Header(&header)); err != nil {
			t.Fatal(err)
		}
		ids := header.Get(interceptors.RequestIDKey)
		if len(ids) != 1 {
			t.Fatalf("x-request-id headers = %q, want one", ids)
		}
		return ids[0]
	}
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	if id := requestID("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01"); id != traceID {
		t.Errorf("request id in a trace = %q, want the trace id %s", id, traceID)
	}
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	first, second := requestID(), requestID()
	if !hex32.MatchString(first) || !hex32.MatchString(second) || first == second {
		t.Errorf("request ids outside a trace = %q and %q, want two different ids of 32 hex digits", first, second)
	}
	if id := requestID(interceptors.RequestIDKey, "req-42", "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01"); id != "req-42" {
		t.Errorf("request id = %q, want the caller's req-42", id)
	}
	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}
	var traced []string
	for _, line := range logLines(t, out.String(), "finished call") {
		id, _ := line["trace_id"].(string)
		traced = append(traced, id)
	}
	if want := []string{traceID, "", "", traceID}; strings.Join(traced, ",") != strings.Join(want, ",") {
		t.Errorf("logged trace ids = %q, want %q", traced, want)
	}
}

// With spans recorded, a call that came without a trace starts one, and its id is the request id.
func TestRequestIDIsTheServerSpansTraceID(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	cfg := testkit.TestConfig()
	cfg.LogSample = 1 // the trace is not sampled: only the share would log it
	_, running, cc := serveExample(t, cfg, log, server.WithTracerProvider(tp))
	req := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	if _, err := userv1.NewUserServiceClient(cc).GetUser(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, out.String(), "finished call")
	if len(lines) != 1 || lines[0]["trace_id"] == nil || lines[0]["request_id"] != lines[0]["trace_id"] {
		t.Errorf("finished-call lines = %v, want one whose request id is its (unsampled) trace id", lines)
	}
}
