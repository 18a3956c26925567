package rest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/gateway/internal/rest"
)

// users is the testkit's real example UserService, which records what reached it: the metadata
// of GetUser calls, and when ExportUsers streams end. A lookup by a username "code-<name>" fails
// with the status errs holds under that name.
type users struct {
	*testkit.ExampleUsers

	mu    sync.Mutex
	md    metadata.MD
	ended chan struct{} // receives when an ExportUsers stream returns
}

var errs = map[string]error{
	"not-found":      status.Error(codes.NotFound, "no such user"),
	"already-exists": status.Error(codes.AlreadyExists, "username taken"),
	"precondition": withDetails(status.New(codes.FailedPrecondition, "wrong version"),
		&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{Type: "VERSION", Subject: "user", Description: "stale"}}}),
	"exhausted": withDetails(status.New(codes.ResourceExhausted, "slow down"),
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)}),
	"unavailable": status.Error(codes.Unavailable, "try later"),
	"deadline":    status.Error(codes.DeadlineExceeded, "too slow"),
}

func withDetails(st *status.Status, d protoadapt.MessageV1) error {
	s, err := st.WithDetails(d)
	if err != nil {
		panic(err) // a detail type that is no message: the table above is wrong
	}
	return s.Err()
}

func (u *users) GetUser(ctx context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	u.mu.Lock()
	u.md = md.Copy()
	u.mu.Unlock()
	if name, ok := strings.CutPrefix(req.GetUsername(), "code-"); ok {
		return nil, errs[name]
	}
	return u.ExampleUsers.GetUser(ctx, req)
}

func (u *users) lastMD() metadata.MD {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.md
}

func (u *users) ExportUsers(req *userv1.ExportUsersRequest, stream grpc.ServerStreamingServer[userv1.ExportUsersResponse]) error {
	defer func() { u.ended <- struct{}{} }()
	return u.ExampleUsers.ExportUsers(req, stream)
}

// fixture is a gateway over a real chassis server of the example UserService on a loopback
// socket, which verifies tokens signed by keys.
type fixture struct {
	url   string
	users *users
	keys  testkit.Keys
}

func newFixture(t *testing.T, opts ...rest.Option) (*fixture, *rest.Gateway) {
	t.Helper()
	keys := testkit.NewKeys(t)
	cfg := testkit.TestConfig()
	cfg.AuthPublicKey = keys.PublicKeyFile
	srv, err := server.New("user", cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	u := &users{ExampleUsers: testkit.NewExampleUsers("u1"), ended: make(chan struct{}, 8)}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, u); err != nil {
		t.Fatal(err)
	}
	running := testkit.Serve(t, srv)
	cc, err := grpc.NewClient(running.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	gw, err := rest.New(t.Context(), rest.Conns{User: cc, Order: cc, Payment: cc}, testkit.Logger(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(gw)
	t.Cleanup(ts.Close)
	return &fixture{url: ts.URL, users: u, keys: keys}, gw
}

// do sends a request with headers and returns the response with its body read.
func (f *fixture) do(t *testing.T, method, path, body string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// bearer is an Authorization value with a token the service accepts.
func (f *fixture) bearer(t *testing.T, subject string, roles ...string) string {
	return "Bearer " + f.keys.Token(t, subject, roles...)
}

// rpcStatus is a google.rpc.Status as JSON.
type rpcStatus struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

func decodeStatus(t *testing.T, resp *http.Response, body []byte) rpcStatus {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json; body %s", ct, body)
	}
	var st rpcStatus
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("error body %q is no JSON google.rpc.Status: %v", body, err)
	}
	return st
}

func TestErrors(t *testing.T) {
	t.Parallel()
	f, _ := newFixture(t)
	user := http.Header{"Authorization": {f.bearer(t, uuid.NewString(), auth.RoleUser)}}
	tests := []struct {
		name       string
		method     string
		path       string
		header     http.Header
		wantHTTP   int
		wantCode   codes.Code
		wantDetail string // a substring of the details' JSON
	}{
		{"invalid argument with field violations", "GET", "/v1/users/not-a-uuid", user, 400, codes.InvalidArgument, `"field":"id"`},
		{"unauthenticated", "GET", "/v1/users/" + uuid.NewString(), nil, 401, codes.Unauthenticated, ""},
		{"permission denied", "GET", "/v1/users:export", user, 403, codes.PermissionDenied, ""},
		{"not found", "GET", "/v1/users:lookup?username=code-not-found", user, 404, codes.NotFound, ""},
		{"already exists", "GET", "/v1/users:lookup?username=code-already-exists", user, 409, codes.AlreadyExists, ""},
		{"failed precondition", "GET", "/v1/users:lookup?username=code-precondition", user, 400, codes.FailedPrecondition, `google.rpc.PreconditionFailure`},
		{"resource exhausted", "GET", "/v1/users:lookup?username=code-exhausted", user, 429, codes.ResourceExhausted, `google.rpc.RetryInfo`},
		{"unavailable", "GET", "/v1/users:lookup?username=code-unavailable", user, 503, codes.Unavailable, ""},
		{"deadline exceeded", "GET", "/v1/users:lookup?username=code-deadline", user, 504, codes.DeadlineExceeded, ""},
		{"malformed body", "POST", "/v1/users", nil, 400, codes.InvalidArgument, ""},
		{"unknown route", "GET", "/v1/nowhere", nil, 404, codes.NotFound, ""},
		{"unknown path outside the API", "GET", "/nowhere", nil, 404, codes.NotFound, ""},
		{"wrong method", "DELETE", "/v1/users", nil, 405, codes.Unimplemented, ""},
		{"wrong method on the document", "PUT", rest.OpenAPIPath, nil, 405, codes.Unimplemented, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body := ""
			if tt.method == "POST" {
				body = "{not json"
			}
			resp, b := f.do(t, tt.method, tt.path, body, tt.header)
			if resp.StatusCode != tt.wantHTTP {
				t.Errorf("HTTP status = %d, want %d; body %s", resp.StatusCode, tt.wantHTTP, b)
			}
			var st rpcStatus
			if strings.HasPrefix(tt.path, "/v1/users:export") {
				// A server stream's error, even before its first message, is a stream chunk:
				// grpc-gateway's {"error": google.rpc.Status}, with the code's HTTP status.
				var chunk struct{ Error rpcStatus }
				if err := json.Unmarshal(b, &chunk); err != nil {
					t.Fatalf("stream error %q: %v", b, err)
				}
				st = chunk.Error
			} else {
				st = decodeStatus(t, resp, b)
			}
			if codes.Code(st.Code) != tt.wantCode || st.Message == "" {
				t.Errorf("status = %+v, want code %v with a message", st, tt.wantCode)
			}
			if tt.wantDetail != "" && !strings.Contains(strings.ReplaceAll(string(b), " ", ""), tt.wantDetail) {
				t.Errorf("body %s has no %s detail", b, tt.wantDetail)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id in the answer")
			}
		})
	}
	t.Run("headers of errors", func(t *testing.T) {
		t.Parallel()
		resp, _ := f.do(t, "GET", "/v1/users:lookup?username=code-exhausted", "", user)
		if got := resp.Header.Get("Retry-After"); got != "2" {
			t.Errorf("Retry-After = %q, want 2 (1.5s rounded up)", got)
		}
		resp, _ = f.do(t, "GET", "/v1/users/"+uuid.NewString(), "", nil)
		if got := resp.Header.Get("Www-Authenticate"); got != "Bearer" {
			t.Errorf("WWW-Authenticate = %q, want Bearer", got)
		}
	})
}

func TestPanicAndBodyLimit(t *testing.T) {
	t.Parallel()
	f, gw := newFixture(t, rest.WithMaxBodyBytes(64))
	gw.Handle("/boom", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }))
	resp, b := f.do(t, "GET", "/boom", "", nil)
	if st := decodeStatus(t, resp, b); resp.StatusCode != 500 || codes.Code(st.Code) != codes.Internal || strings.Contains(string(b), "boom") {
		t.Errorf("panicking handler answered %d %s, want a 500 INTERNAL that does not leak the panic", resp.StatusCode, b)
	}
	resp, b = f.do(t, "POST", "/v1/users", `{"email":"`+strings.Repeat("a", 100)+`@example.com"}`, nil)
	if st := decodeStatus(t, resp, b); resp.StatusCode != 413 || codes.Code(st.Code) != codes.ResourceExhausted {
		t.Errorf("oversized body answered %d %s, want 413 RESOURCE_EXHAUSTED", resp.StatusCode, b)
	}
}

func TestHeaders(t *testing.T) {
	t.Parallel()
	f, _ := newFixture(t)
	subject := uuid.NewString()
	const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	resp, b := f.do(t, "GET", "/v1/users:lookup?username=ada", "", http.Header{
		"Authorization":          {f.bearer(t, subject, auth.RoleUser)},
		"X-Request-Id":           {"req-42"},
		"Traceparent":            {traceparent},
		"X-Evil":                 {"1"},
		"Grpc-Metadata-X-Role":   {"admin"},
		"Grpc-Metadata-Identity": {"order"},
		"X-Forwarded-For":        {"203.0.113.9"},
		"Cookie":                 {"session=secret"},
	})
	if resp.StatusCode != 200 {
		t.Fatalf("lookup answered %d %s", resp.StatusCode, b)
	}
	var got struct {
		User struct{ ID string } `json:"user"`
	}
	if err := json.Unmarshal(b, &got); err != nil || got.User.ID != subject {
		t.Errorf("user = %s (%v), want the token's subject %s: Authorization did not reach the service", b, err, subject)
	}
	if id := resp.Header.Get("X-Request-Id"); id != "req-42" {
		t.Errorf("X-Request-Id answered %q, want the client's req-42", id)
	}
	md := f.users.lastMD()
	if v := md.Get("x-request-id"); len(v) != 1 || v[0] != "req-42" {
		t.Errorf("x-request-id at the service = %q, want [req-42]", v)
	}
	if v := md.Get("traceparent"); len(v) != 1 || !strings.Contains(v[0], "0af7651916cd43dd8448eb211c80319c") {
		t.Errorf("traceparent at the service = %q, want the client's trace", v)
	}
	if v := md.Get("authorization"); len(v) != 1 {
		t.Errorf("authorization at the service = %d values, want 1", len(v))
	}
	if v := md.Get("x-forwarded-for"); len(v) != 1 || v[0] != "127.0.0.1" {
		t.Errorf("x-forwarded-for at the service = %q, want only the address the gateway saw", v)
	}
	for k := range md {
		if strings.Contains(k, "evil") || strings.Contains(k, "role") || strings.Contains(k, "identity") ||
			strings.Contains(k, "cookie") || strings.HasPrefix(k, "grpcgateway-") {
			t.Errorf("metadata %s=%q reached the service", k, md[k])
		}
	}
	for k := range resp.Header {
		if strings.HasPrefix(k, "Grpc-Metadata-") || strings.EqualFold(k, "x-served-by") {
			t.Errorf("service metadata %s leaked into the answer", k)
		}
	}

	// Without an id, or with one the services would replace, the gateway makes one and both ends see it.
	for _, sent := range []string{"", "bad id with spaces"} {
		h := http.Header{"Authorization": {f.bearer(t, subject, auth.RoleUser)}}
		if sent != "" {
			h.Set("X-Request-Id", sent)
		}
		resp, _ := f.do(t, "GET", "/v1/users:lookup?username=ada", "", h)
		id := resp.Header.Get("X-Request-Id")
		if _, err := uuid.Parse(id); err != nil {
			t.Errorf("sent %q: X-Request-Id answered %q, want a new UUID", sent, id)
		}
		if v := f.users.lastMD().Get("x-request-id"); len(v) != 1 || v[0] != id {
			t.Errorf("sent %q: x-request-id at the service = %q, want %q", sent, v, id)
		}
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	f, _ := newFixture(t, rest.WithCORSOrigins("https://shop.example"))
	tests := []struct {
		origin string
		allow  bool
	}{
		{"https://shop.example", true},
		{f.url, true},                    // the gateway's own origin, always
		{"http://localhost:5173", false}, // a default dev origin, replaced by the option
		{"https://evil.example", false},
		{"null", false},
	}
	for _, tt := range tests {
		t.Run(tt.origin, func(t *testing.T) {
			t.Parallel()
			resp, b := f.do(t, "OPTIONS", "/v1/users", "", http.Header{
				"Origin":                         {tt.origin},
				"Access-Control-Request-Method":  {"POST"},
				"Access-Control-Request-Headers": {"authorization,content-type,x-request-id"},
			})
			acao := resp.Header.Get("Access-Control-Allow-Origin")
			if !tt.allow {
				if acao != "" {
					t.Errorf("preflight from a refused origin allowed %q", acao)
				}
				return
			}
			if resp.StatusCode != http.StatusNoContent || acao != tt.origin {
				t.Fatalf("preflight answered %d with Allow-Origin %q; body %s", resp.StatusCode, acao, b)
			}
			if h := strings.ToLower(resp.Header.Get("Access-Control-Allow-Headers")); !strings.Contains(h, "authorization") || !strings.Contains(h, "x-request-id") {
				t.Errorf("Allow-Headers = %q", h)
			}
			if resp.Header.Get("Access-Control-Allow-Credentials") != "" || resp.Header.Get("Access-Control-Max-Age") != "600" {
				t.Errorf("credentials %q, max age %q: want none and 600", resp.Header.Get("Access-Control-Allow-Credentials"), resp.Header.Get("Access-Control-Max-Age"))
			}
			resp, _ = f.do(t, "GET", rest.OpenAPIPath, "", http.Header{"Origin": {tt.origin}})
			if resp.Header.Get("Access-Control-Allow-Origin") != tt.origin || !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "X-Request-Id") {
				t.Errorf("actual request: Allow-Origin %q, Expose-Headers %q", resp.Header.Get("Access-Control-Allow-Origin"), resp.Header.Get("Access-Control-Expose-Headers"))
			}
		})
	}
	for _, bad := range []string{"*", "shop.example", "https://shop.example/path"} {
		if _, err := rest.New(t.Context(), rest.Conns{User: &grpc.ClientConn{}, Order: &grpc.ClientConn{}, Payment: &grpc.ClientConn{}},
			testkit.Logger(t), rest.WithCORSOrigins(bad)); err == nil {
			t.Errorf("New accepted the CORS origin %q", bad)
		}
	}
}

func TestOpenAPI(t *testing.T) {
	t.Parallel()
	f, _ := newFixture(t)
	resp, b := f.do(t, "GET", rest.OpenAPIPath, "", nil)
	var doc struct {
		Swagger string         `json:"swagger"`
		Paths   map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("GET %s: %d %s (%v)", rest.OpenAPIPath, resp.StatusCode, resp.Header.Get("Content-Type"), err)
	}
	if doc.Swagger != "2.0" || doc.Paths["/v1/orders"] == nil {
		t.Errorf("document is swagger %q without /v1/orders", doc.Swagger)
	}
}

func TestStreams(t *testing.T) {
	t.Parallel()
	f, _ := newFixture(t)
	tests := []struct {
		name, accept, wantType, prefix, suffix string
	}{
		{"newline-delimited JSON", "", "application/json", `{"result":{"user":`, "\n"},
		{"server-sent events", "text/event-stream", "text/event-stream", `data: {"result":{"user":`, "\n\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Not parallel: each stream's end is observed on the one service.
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, "GET", f.url+"/v1/users:export", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", f.bearer(t, uuid.NewString(), auth.RoleAdmin))
			if tt.accept != "" {
				req.Header.Set("Accept", tt.accept)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != tt.wantType {
				t.Fatalf("export answered %d %q, want 200 %q", resp.StatusCode, resp.Header.Get("Content-Type"), tt.wantType)
			}
			// The example sends one user and then holds the stream open: the first message must
			// arrive while the stream is still open, i.e. flushed.
			r := bufio.NewReader(resp.Body)
			var msg strings.Builder
			for !strings.HasSuffix(msg.String(), tt.suffix) || (tt.suffix == "\n\n" && !strings.HasSuffix(msg.String(), "}\n\n")) {
				line, err := r.ReadString('\n')
				if err != nil {
					t.Fatalf("reading the first message: %v (got %q)", err, msg.String())
				}
				msg.WriteString(line)
			}
			if got := strings.ReplaceAll(msg.String(), " ", ""); !strings.HasPrefix(got, strings.ReplaceAll(tt.prefix, " ", "")) {
				t.Errorf("first message = %q, want it to start with %q", msg.String(), tt.prefix)
			}
			select {
			case <-f.users.ended:
				t.Fatal("the service's stream ended before the client went away")
			default:
			}
			// The client goes away: the service's stream must end.
			cancel()
			select {
			case <-f.users.ended:
			case <-time.After(10 * time.Second):
				t.Fatal("the service's stream was still open 10s after the HTTP client went away")
			}
		})
	}
}

// TestUnreachableServiceNamesNoAddress calls through a gateway whose order connection points at a
// port nothing listens on: the browser gets 503 UNAVAILABLE with a message that tells it to try
// again, not grpc-go's dial error with the address the gateway dialled.
func TestUnreachableServiceNamesNoAddress(t *testing.T) {
	t.Parallel()
	cc, err := grpc.NewClient("127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	gw, err := rest.New(t.Context(), rest.Conns{User: cc, Order: cc, Payment: cc}, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(gw)
	t.Cleanup(ts.Close)
	f := &fixture{url: ts.URL}
	resp, body := f.do(t, http.MethodGet, "/v1/products", "", nil)
	st := decodeStatus(t, resp, body)
	if resp.StatusCode != http.StatusServiceUnavailable || st.Code != int(codes.Unavailable) {
		t.Fatalf("GET /v1/products with the order service unreachable = %d %s, want 503 UNAVAILABLE", resp.StatusCode, body)
	}
	if strings.Contains(string(body), "127.0.0.1") || strings.Contains(string(body), "dial") {
		t.Errorf("the answer names the gateway's view of the network: %s", body)
	}
}
