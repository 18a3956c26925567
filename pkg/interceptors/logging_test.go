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
