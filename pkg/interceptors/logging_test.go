package interceptors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// callContext is the context of a call from a peer, with a request id, a trace and a deadline.
func callContext(t testing.TB) context.Context {
	t.Helper()
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36},
		SpanID:     trace.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7},
		TraceFlags: trace.FlagsSampled,
		Remote:     true,
	})
	ctx := trace.ContextWithRemoteSpanContext(t.Context(), sc)
	ctx = interceptors.WithRequestID(ctx, "req-1")
	ctx = peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 7), Port: 4242}})
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// unary returns a function calling s's unary form for method, with a handler that fails with err;
// it allocates nothing itself.
func unary(s interceptors.Server, method string, err error) func(ctx context.Context) {
	info := &grpc.UnaryServerInfo{FullMethod: method}
	handler := func(context.Context, any) (any, error) { return nil, err }
	return func(ctx context.Context) { _, _ = s.Unary(ctx, nil, info, handler) }
}

// Below its level, the logging interceptor builds nothing: not one allocation per call.
// (go-grpc-middleware's interceptor built its field list first: about 100 allocations a call.)
func TestLoggingBelowLevelAllocatesNothing(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process' allocations.
	log := slog.New(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	l := interceptors.Logging(log)
	ctx := callContext(t)
	ok := unary(l, "/meshmart.user.v1.UserService/GetUser", nil)
	notFound := unary(l, "/meshmart.user.v1.UserService/GetUser", status.Error(codes.NotFound, "no such user"))
	allocs := testing.AllocsPerRun(200, func() {
		ok(ctx)
		notFound(ctx)
	})
	if allocs != 0 {
		t.Errorf("a call below the log level allocates %v times, want 0", allocs)
	}
	// Nor does a success that sampling leaves out, at info.
	info := slog.New(slog.NewJSONHandler(io.Discard, nil))
	sampledOut := unary(interceptors.Logging(info, interceptors.WithSampling(0, time.Hour)), "/meshmart.user.v1.UserService/GetUser", nil)
	untraced := interceptors.WithRequestID(t.Context(), "req-1")
	if allocs := testing.AllocsPerRun(200, func() { sampledOut(untraced) }); allocs != 0 {
		t.Errorf("a success left out by sampling allocates %v times, want 0", allocs)
	}
}

// Above its level, one line per call, with the house's keys, built in the record itself.
func TestLoggingLine(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process' allocations.
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	l := interceptors.Logging(log)
	ctx := callContext(t)
	unary(l, "/meshmart.user.v1.UserService/GetUser", nil)(ctx)
	unary(l, "/meshmart.user.v1.UserService/DeleteUser", status.Error(codes.Internal, "disk on fire"))(ctx)
	unary(l, "/grpc.health.v1.Health/Check", nil)(ctx)
	var lines []map[string]any
	for _, text := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var line map[string]any
		if err := json.Unmarshal([]byte(text), &line); err != nil {
			t.Fatalf("not JSON: %s", text)
		}
		lines = append(lines, line)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2 (health checks are not logged):\n%s", len(lines), out.String())
	}
	want := []string{"time", "level", "msg", "component", "kind", "service", "method", "code", "duration_ms",
		"start_time", "peer", "request_id", "trace_id", "deadline"}
	ok, failed := lines[0], lines[1]
	if got := slices.Sorted(maps.Keys(ok)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("keys = %v, want %v", got, slices.Sorted(slices.Values(want)))
	}
	for k, v := range map[string]any{"level": "INFO", "msg": "finished call", "component": "server", "kind": "unary",
		"service": "meshmart.user.v1.UserService", "method": "GetUser", "code": "OK", "peer": "10.0.0.7:4242",
		"request_id": "req-1", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"} {
		if ok[k] != v {
			t.Errorf("%s = %v, want %v", k, ok[k], v)
		}
	}
	if _, isNumber := ok["duration_ms"].(float64); !isNumber {
		t.Errorf("duration_ms = %#v, want a number", ok["duration_ms"])
	}
	if failed["level"] != "ERROR" || failed["code"] != "Internal" || !strings.Contains(failed["error"].(string), "disk on fire") {
		t.Errorf("failed call's line = %v", failed)
	}
	// A logged line costs a handful of allocations (the peer's and trace id's strings, the record's
	// attributes past its first five), not go-grpc-middleware's field list and its renaming.
	if raceEnabled {
		return
	}
	quiet := interceptors.Logging(slog.New(slog.NewJSONHandler(io.Discard, nil)))
	call := unary(quiet, "/meshmart.user.v1.UserService/GetUser", nil)
	if allocs := testing.AllocsPerRun(200, func() { call(ctx) }); allocs > 6 {
		t.Errorf("a logged call allocates %v times, want at most 6", allocs)
	}
}

// countLines runs call n times and returns how many finished-call lines out received.
func countLines(out *bytes.Buffer, n int, call func()) int {
	out.Reset()
	for range n {
		call()
	}
	return strings.Count(out.String(), `"msg":"finished call"`)
}

// With sampling, a fast success outside a sampled trace is logged for the given share of calls;
// whatever someone may look for is always logged: a failure, a slow call, a stream, a call in a
// trace that is kept. Payload logging, for debugging, logs every call.
func TestLoggingSampling(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	const method = "/meshmart.user.v1.UserService/GetUser"
	traced := callContext(t) // its trace is sampled
	untraced := interceptors.WithRequestID(t.Context(), "req-2")
	unsampledTrace := trace.ContextWithRemoteSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1}, SpanID: trace.SpanID{1}, Remote: true}))

	none := interceptors.Logging(log, interceptors.WithSampling(0, time.Hour))
	ok, failed := unary(none, method, nil), unary(none, method, status.Error(codes.NotFound, "no such user"))
	for name, c := range map[string]struct {
		call func()
		want int
	}{
		"fast success":                  {func() { ok(untraced) }, 0},
		"fast success, unsampled trace": {func() { ok(unsampledTrace) }, 0},
		"fast success, sampled trace":   {func() { ok(traced) }, 10},
		"failure":                       {func() { failed(untraced) }, 10},
		"stream": {func() {
			_ = none.Stream(nil, &serverStream{ctx: untraced}, &grpc.StreamServerInfo{FullMethod: method, IsServerStream: true},
				func(any, grpc.ServerStream) error { return nil })
		}, 10},
	} {
		if got := countLines(&out, 10, c.call); got != c.want {
			t.Errorf("%s: %d lines of 10 calls, want %d", name, got, c.want)
		}
	}

	slow := interceptors.Logging(log, interceptors.WithSampling(0, time.Millisecond))
	slowInfo := &grpc.UnaryServerInfo{FullMethod: method}
	sleepy := func(context.Context, any) (any, error) { time.Sleep(2 * time.Millisecond); return nil, nil }
	if got := countLines(&out, 3, func() { _, _ = slow.Unary(untraced, nil, slowInfo, sleepy) }); got != 3 {
		t.Errorf("slow successes: %d lines of 3 calls, want 3", got)
	}

	// Binomial(4000, 0.5): 2000 ± 32, so 1700..2300 is more than nine standard deviations.
	half := unary(interceptors.Logging(log, interceptors.WithSampling(0.5, time.Hour)), method, nil)
	if got := countLines(&out, 4000, func() { half(untraced) }); got < 1700 || got > 2300 {
		t.Errorf("share 0.5: %d lines of 4000 calls, want about 2000", got)
	}
	all := unary(interceptors.Logging(log, interceptors.WithSampling(1, time.Hour)), method, nil)
	if got := countLines(&out, 50, func() { all(untraced) }); got != 50 {
		t.Errorf("share 1: %d lines of 50 calls, want 50", got)
	}
	payloads := unary(interceptors.Logging(log, interceptors.WithSampling(0, time.Hour), interceptors.WithPayloads(true)), method, nil)
	if got := countLines(&out, 5, func() { payloads(untraced) }); got != 5 {
		t.Errorf("with payloads: %d lines of 5 calls, want 5", got)
	}
}

// serverStream is a grpc.ServerStream with a context and nothing else.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// A client logs a unary call's end itself: successes at Debug, failures at their code's level,
// without the peer (its context's peer is the caller it serves, not the server it calls), and
// nothing built below the level.
func TestClientLoggingLine(t *testing.T) {
	// Not parallel: AllocsPerRun counts the whole process' allocations.
	var out bytes.Buffer
	info := slog.New(slog.NewJSONHandler(&out, nil))
	ctx := callContext(t)
	invoke := func(c interceptors.Client, err error) func() {
		invoker := func(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error { return err }
		return func() { _ = c.Unary(ctx, "/meshmart.payment.v1.PaymentService/CreatePayment", nil, nil, nil, invoker) }
	}
	atInfo := interceptors.ClientLogging(info)
	if got := countLines(&out, 3, invoke(atInfo, nil)); got != 0 {
		t.Errorf("successes at info: %d lines, want 0", got)
	}
	if got := countLines(&out, 1, invoke(atInfo, status.Error(codes.Unavailable, "no replica"))); got != 1 {
		t.Fatalf("a failure at info: %d lines, want 1", got)
	}
	var line map[string]any
	if err := json.Unmarshal(out.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"level": "WARN", "component": "client", "kind": "unary", "method": "CreatePayment",
		"service": "meshmart.payment.v1.PaymentService", "code": "Unavailable", "request_id": "req-1"} {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["peer"]; ok {
		t.Errorf("a client's line names the peer of the call it serves: %v", line)
	}
	debug := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if got := countLines(&out, 2, invoke(interceptors.ClientLogging(debug), nil)); got != 2 {
		t.Errorf("successes at debug: %d lines, want 2", got)
	}
	quiet := invoke(interceptors.ClientLogging(slog.New(slog.NewJSONHandler(io.Discard, nil))), nil)
	if allocs := testing.AllocsPerRun(200, quiet); allocs != 0 {
		t.Errorf("a successful client call below Debug allocates %v times, want 0", allocs)
	}
}
