package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	_ "google.golang.org/genproto/googleapis/rpc/errdetails" // resolves the details of a google.rpc.Status body
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// shared is the platform the package's tests share, started by the first test that needs it and
// stopped by TestMain; traces receives the spans of every process of it.
var shared struct {
	once   sync.Once
	rig    *loadkit.Rig
	traces *testkit.Traces
	dir    string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.rig != nil {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "platform output:\n%s", shared.rig.Log)
		}
		shared.rig.Close()
	}
	if shared.traces != nil {
		shared.traces.Stop()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// rig returns the shared platform: one replica of each service (enough for every check here, and
// it makes the payment instance whose metrics the cancellation test reads the only one), and the
// gateway, every process logging each call at info (the request-id test reads the lines) and
// exporting its spans to the test's OTLP receiver.
func rig(t *testing.T) *loadkit.Rig {
	t.Helper()
	shared.once.Do(func() {
		start := time.Now()
		shared.err = launch(testkit.RepoRoot(t))
		t.Logf("the shared platform started in %v", time.Since(start).Round(100*time.Millisecond))
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.rig
}

func launch(root string) error {
	var err error
	if shared.traces, err = testkit.StartTraces(); err != nil {
		return err
	}

	if shared.dir, err = os.MkdirTemp("", "meshmart-gateway-e2e-"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	shared.rig, err = loadkit.Launch(ctx, root, shared.dir, loadkit.Options{Replicas: 1, Gateway: true,
		Env: append([]string{"MESHMART_LOG_LEVEL=info"}, shared.traces.Env()...)})
	return err
}

// suffix makes the names a test signs up unique, so that the tests may run again (-count) on the
// same platform.
func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// request is one HTTP request to the gateway.
type request struct {
	method, path string
	// token, when set, is sent as "Authorization: Bearer <token>".
	token string
	// body is sent as is when a string or []byte, as protojson when a proto.Message.
	body any
	// header is added to the request.
	header http.Header
}

// response is the gateway's answer, read whole.
type response struct {
	*http.Response
	body []byte
}

// do sends r to the gateway and reads the whole answer, within 15 seconds.
func do(t *testing.T, r request) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	resp := send(t, ctx, r)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read the body: %v", r.method, r.path, err)
	}
	return response{Response: resp, body: b}
}

// send sends r to the gateway and returns the answer as soon as its headers arrive; the caller
// reads and closes the body, and ctx bounds the whole exchange.
func send(t *testing.T, ctx context.Context, r request) *http.Response {
	t.Helper()
	resp, err := http.DefaultClient.Do(newRequest(t, ctx, r))
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return resp
}

// newRequest builds r as an HTTP request to the gateway.
func newRequest(t *testing.T, ctx context.Context, r request) *http.Request {
	t.Helper()
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	case proto.Message:
		j, err := protojson.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		body = bytes.NewReader(j)
	default:
		t.Fatalf("request body of type %T", r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, rig(t).GatewayURL+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range r.header {
		req.Header[http.CanonicalHeaderKey(k)] = vs
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.token != "" {
		req.Header.Set("Authorization", "Bearer "+r.token)
	}
	return req
}

// ok fails the test unless the answer is 200 with a JSON body, and decodes the body into msg
// (when not nil) strictly: a field the RPC's response does not have fails too.
func (r response) ok(t *testing.T, msg proto.Message) {
	t.Helper()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: HTTP %d, want 200: %s", r.Request.Method, r.Request.URL.Path, r.StatusCode, r.body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q, want application/json", r.Request.Method, r.Request.URL.Path, ct)
	}
	if msg != nil {
		if err := protojson.Unmarshal(r.body, msg); err != nil {
			t.Fatalf("%s %s: the body is no %s: %v\n%s", r.Request.Method, r.Request.URL.Path, msg.ProtoReflect().Descriptor().FullName(), err, r.body)
		}
	}
}

// status fails the test unless the answer has HTTP status want and a JSON google.rpc.Status body,
// which it returns.
func (r response) status(t *testing.T, want int) *spb.Status {
	t.Helper()
	what := r.Request.Method + " " + r.Request.URL.String()
	if r.StatusCode != want {
		t.Errorf("%s: HTTP %d, want %d: %s", what, r.StatusCode, want, r.body)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	st := &spb.Status{}
	if err := protojson.Unmarshal(r.body, st); err != nil {
		t.Fatalf("%s: the body is no google.rpc.Status: %v\n%s", what, err, r.body)
	}
	if st.GetMessage() == "" {
		t.Errorf("%s: the status has no message: %s", what, r.body)
	}
	return st
}

// account is a user signed up and logged in through the gateway.
type account struct {
	id, email, username, password string
	login                         *userv1.LoginResponse
}

func (a account) token() string { return a.login.GetAccessToken() }

// signUp creates an account called name (made unique) and logs it in, through the gateway.
func signUp(t *testing.T, name string) account {
	t.Helper()
	sfx := suffix()
	a := account{email: name + "-" + sfx + "@example.com", username: name + "-" + sfx, password: loadkit.Password}
	do(t, request{method: "POST", path: "/v1/users", body: &userv1.CreateUserRequest{
		Email: a.email, Username: a.username, Password: a.password, GivenName: name,
	}}).ok(t, nil)
	a.login = logIn(t, a.email, a.password)
	a.id = a.login.GetUser().GetId()
	return a
}

// logIn logs an account in through the gateway.
func logIn(t *testing.T, email, password string) *userv1.LoginResponse {
	t.Helper()
	login := &userv1.LoginResponse{}
	do(t, request{method: "POST", path: "/v1/auth:login", body: fmt.Sprintf(`{"email":%q,"password":%q}`, email, password)}).ok(t, login)
	if login.GetAccessToken() == "" {
		t.Fatalf("log %s in: no access token", email)
	}
	return login
}

// admin logs the platform's administrator in through the gateway.
func admin(t *testing.T) account {
	t.Helper()
	p := rig(t).Admin
	login := logIn(t, p.Email, p.Password)
	return account{id: login.GetUser().GetId(), email: p.Email, password: p.Password, login: login}
}

// jsonLines splits a newline-delimited JSON body into its lines, each unwrapped from
// grpc-gateway's {"result": ...} envelope; a line carrying {"error": ...} fails the test.
func jsonLines(t *testing.T, body []byte) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	for line := range strings.Lines(string(body)) {
		if strings.TrimSpace(line) == "" {
			continue
		}
		out = append(out, unwrapResult(t, []byte(line)))
	}
	return out
}

// unwrapResult returns the "result" of one streamed message; an "error" fails the test.
func unwrapResult(t *testing.T, line []byte) json.RawMessage {
	t.Helper()
	var env struct {
		Result json.RawMessage `json:"result"`
		Error  json.RawMessage `json:"error"`
	}
	if err := json.Unmarshal(line, &env); err != nil {
		t.Fatalf("stream line %q: %v", line, err)
	}
	if env.Error != nil {
		t.Fatalf("stream line carries an error: %s", line)
	}
	if env.Result == nil {
		t.Fatalf("stream line %q has no result", line)
	}
	return env.Result
}
