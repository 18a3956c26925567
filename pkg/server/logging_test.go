package server_test

import (
	"bufio"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// TestOneLogLinePerCallWithoutSecrets checks the logging interceptor's line, that health checks
// stay out of the log, and, with payload logging on, that fields marked debug_redact never reach
// the log.
func TestOneLogLinePerCallWithoutSecrets(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	cfg := testkit.TestConfig()
	cfg.LogPayloads = true
	tp := sdktrace.NewTracerProvider()
	_, running, cc := serveExample(t, cfg, log, server.WithTracerProvider(tp))
	const password = "correct horse battery"
	_, err := userv1.NewUserServiceClient(cc).CreateUser(t.Context(), &userv1.CreateUserRequest{
		Email: "ada@example.com", Username: "ada", Password: password, GivenName: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	// Health checks, which Consul makes every few seconds, are not logged.
	if _, err := healthpb.NewHealthClient(cc).Check(t.Context(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}

	logs := out.String()
	if strings.Contains(logs, password) {
		t.Fatalf("the password reached the log:\n%s", logs)
	}
	for _, line := range logLines(t, logs, "request received") {
		if req, ok := line["request"].(string); !ok || !strings.Contains(req, `"password":"[REDACTED]"`) {
			t.Errorf("request payload logged without redaction: %v", line)
		}
	}
	finished := logLines(t, logs, "finished call")
	if len(finished) != 1 {
		t.Fatalf("%d finished-call lines, want 1:\n%s", len(finished), logs)
	}
	for _, key := range []string{"service", "method", "code", "duration_ms", "peer", "request_id", "trace_id"} {
		if _, ok := finished[0][key]; !ok {
			t.Errorf("the log line lacks %q: %v", key, finished[0])
		}
	}
	if finished[0]["method"] != "CreateUser" || finished[0]["code"] != "OK" {
		t.Errorf("log line = %v", finished[0])
	}
}

// The server samples the lines of fast successes as -log-sample says, and logs every failure.
func TestSuccessesAreSampled(t *testing.T) {
	t.Parallel()
	if def := server.DefaultConfig(""); def.LogSample != 0.01 || def.LogSlow != 250*time.Millisecond {
		t.Errorf("defaults: -log-sample %v, -log-slow %v; the README gives 0.01 and 250ms", def.LogSample, def.LogSlow)
	}
	var out testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	cfg := testkit.TestConfig()
	cfg.LogSample = 0
	_, running, cc := serveExample(t, cfg, log)
	client := userv1.NewUserServiceClient(cc)
	for range 20 {
		if _, err := client.GetUser(t.Context(), &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.GetUser(t.Context(), &userv1.GetUserRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("GetUser without a lookup: %v, want InvalidArgument", err)
	}
	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, out.String(), "finished call")
	if len(lines) != 1 || lines[0]["code"] != "InvalidArgument" {
		t.Errorf("finished-call lines = %v, want the failure's alone", lines)
	}
}

// rawCodec sends bytes as they are: what a broken or hostile client puts on the wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

// A request the server cannot decode is answered INTERNAL by grpc-go before any interceptor runs;
// it still gets a log line and a count (grpc_server_rejected_total), from the stats handler.
func TestUndecodableRequestIsLoggedAndCounted(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	srv, running, cc := serveExample(t, testkit.TestConfig(), log)
	// Field 1 (email), length-delimited, with a length that runs past the end.
	var reply []byte
	err := cc.Invoke(t.Context(), userv1.UserService_CreateUser_FullMethodName, []byte{0x0a, 0x7f, 'a'}, &reply, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.Internal {
		t.Fatalf("undecodable CreateUser = %v, want Internal", err)
	}
	// grpc-go ends the call's stats after it sent the status: the count may land a moment after
	// the caller saw the error.
	counted := func() float64 {
		mfs, err := srv.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		var n float64
		for _, mf := range mfs {
			if mf.GetName() != "grpc_server_rejected_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["grpc_method"] == "CreateUser" && labels["grpc_code"] == "Internal" {
					n += m.GetCounter().GetValue()
				}
			}
		}
		return n
	}
	for deadline := time.Now().Add(5 * time.Second); counted() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := counted(); n != 1 {
		t.Errorf("grpc_server_rejected_total{CreateUser, Internal} = %v, want 1", n)
	}
	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, out.String(), "call rejected before handling")
	if len(lines) != 1 || lines[0]["method"] != "CreateUser" || lines[0]["code"] != "Internal" || lines[0]["peer"] == nil {
		t.Fatalf("rejected-call lines = %v, want one for CreateUser, Internal, with its peer:\n%s", lines, out.String())
	}
}

// A call of a method the server does not serve is answered UNIMPLEMENTED, as grpc-go answers it,
// before the chain (no token is asked for, no finished-call line), and is logged and counted as
// rejected.
func TestUnknownMethodIsLoggedAndCounted(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	srv, running, cc := serveExample(t, testkit.TestConfig(), log)
	for _, method := range []string{"/meshmart.user.v1.UserService/Nope", "/no.such.v1.Service/Thing"} {
		var reply []byte
		err := cc.Invoke(t.Context(), method, []byte{}, &reply, grpc.ForceCodec(rawCodec{}))
		if status.Code(err) != codes.Unimplemented {
			t.Errorf("%s = %v, want Unimplemented", method, err)
		}
	}
	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}
	lines := logLines(t, out.String(), "call rejected before handling")
	if len(lines) != 2 || lines[0]["method"] != "Nope" || lines[1]["service"] != "no.such.v1.Service" || lines[0]["code"] != "Unimplemented" || lines[0]["peer"] == nil {
		t.Errorf("rejected-call lines = %v, want Nope and Thing, Unimplemented, with their peer:\n%s", lines, out.String())
	}
	if finished := logLines(t, out.String(), "finished call"); len(finished) != 0 {
		t.Errorf("the chain logged unknown methods: %v", finished)
	}
	mfs, err := srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if mf.GetName() == "grpc_server_rejected_total" {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue()
			}
		}
	}
	if n != 2 {
		t.Errorf("grpc_server_rejected_total = %v, want 2", n)
	}
}

// serveExample serves testkit's example service on the chassis over bufconn, logging to log.
func serveExample(t *testing.T, cfg server.Config, log *slog.Logger, opts ...server.Option) (*server.Server, *testkit.Running, *grpc.ClientConn) {
	t.Helper()
	var srv *server.Server
	running, cc := testkit.Bufconn(t, func(lis net.Listener) *server.Server {
		var err error
		srv, err = server.New("example", cfg, log, append([]server.Option{server.WithListener(lis)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
			t.Fatal(err)
		}
		return srv
	})
	return srv, running, cc
}

// logLines returns the JSON log lines in logs whose msg is msg, failing on a line that is not JSON.
func logLines(t *testing.T, logs, msg string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs))
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("not JSON: %s", sc.Text())
		}
		if line["msg"] == msg {
			lines = append(lines, line)
		}
	}
	return lines
}
