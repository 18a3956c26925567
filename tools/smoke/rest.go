package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// reply is what curl brought back from the gateway.
type reply struct {
	cmd         string // the command as a user would type it, the token as $TOKEN
	status      int
	contentType string // the media type, without parameters
	body        []byte
}

// object decodes the JSON body.
func (rp reply) object() (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(rp.body, &m); err != nil {
		return nil, fmt.Errorf("%s: answer is not a JSON object: %v\n%s", rp.cmd, err, rp.body)
	}
	return m, nil
}

// statusMark starts the line curl appends to the body (-w), which carries the HTTP status and the
// Content-Type; it is left out of the printed command, which shows what a user would type.
const statusMark = "\nsmoke-curl-status:"

// tokenArg is the header argument that carries the access token; it is printed with $TOKEN in its
// place, so that no token reaches the output.
const tokenArg = "Authorization: Bearer "

// curlArgs are the arguments of a request to the gateway: method, path (with its query), a JSON
// body when data is not nil, a bearer token when token is not empty, then extra arguments.
func (r runner) curlArgs(method, path, token string, data any, extra ...string) []string {
	args := []string{"-sS"}
	if method != "GET" {
		args = append(args, "-X", method)
	}
	if token != "" {
		args = append(args, "-H", tokenArg+token)
	}
	if data != nil {
		b, _ := json.Marshal(data)
		args = append(args, "-H", "Content-Type: application/json", "-d", string(b))
	}
	args = append(args, extra...)
	return append(args, strings.TrimSuffix(r.cfg.gateway, "/")+path)
}

// shown is the command line of args as a user would type it into a shell: the token is $TOKEN,
// in double quotes so that the shell expands it, and other arguments are single-quoted where the
// shell would otherwise split or expand them.
func shown(args []string) string {
	parts := []string{"curl"}
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, tokenArg):
			parts = append(parts, `"`+tokenArg+`$TOKEN"`)
		case a == "" || strings.ContainsAny(a, " \"'$&?*;|<>(){}[]!#~`\\"):
			parts = append(parts, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
		default:
			parts = append(parts, a)
		}
	}
	return strings.Join(parts, " ")
}

// curl runs one request to the gateway with the curl binary and prints its command first. It
// fails only when curl could not make the request; the HTTP status is the caller's to check.
func (r runner) curl(ctx context.Context, method, path, token string, data any, extra ...string) (reply, error) {
	args := r.curlArgs(method, path, token, data, append([]string{"--max-time", "20"}, extra...)...)
	rp := reply{cmd: shown(args)}
	r.step("  $ %s", rp.cmd)
	cmd := exec.CommandContext(ctx, r.cfg.curl, append(args, "-w", statusMark+"%{http_code} %{content_type}")...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return rp, fmt.Errorf("%s: %v\n%s", rp.cmd, err, stderr.String())
	}
	out := stdout.Bytes()
	i := bytes.LastIndex(out, []byte(statusMark))
	if i < 0 {
		return rp, fmt.Errorf("%s: no status line in curl's output\n%s", rp.cmd, out)
	}
	code, ctype, _ := strings.Cut(string(out[i+len(statusMark):]), " ")
	rp.body = out[:i]
	rp.status, _ = strconv.Atoi(code)
	rp.contentType, _, _ = mime.ParseMediaType(strings.TrimSpace(ctype))
	return rp, nil
}

// want checks an answer's HTTP status and media type and, for JSON, decodes it.
func (rp reply) want(status int, contentType string) (map[string]any, error) {
	if rp.status != status || rp.contentType != contentType {
		return nil, fmt.Errorf("%s: HTTP %d %s, want %d %s\n%s", rp.cmd, rp.status, rp.contentType, status, contentType, rp.body)
	}
	if contentType != "application/json" {
		return nil, nil
	}
	return rp.object()
}

// curlOK runs a request that must answer 200 with a JSON object.
func (r runner) curlOK(ctx context.Context, method, path, token string, data any) (map[string]any, error) {
	rp, err := r.curl(ctx, method, path, token, data)
	if err != nil {
		return nil, err
	}
	return rp.want(200, "application/json")
}

// curlFails runs a request that must fail with the HTTP status and the gRPC code of a JSON
// google.rpc.Status, and returns that status.
func (r runner) curlFails(ctx context.Context, status, code int, method, path, token string, data any) (map[string]any, error) {
	rp, err := r.curl(ctx, method, path, token, data)
	if err != nil {
		return nil, err
	}
	m, err := rp.want(status, "application/json")
	if err != nil {
		return nil, err
	}
	if got, _ := get(m, "code").(float64); int(got) != code || str(m, "message") == "" {
		return nil, fmt.Errorf("%s: want a google.rpc.Status with code %d and a message, got %s", rp.cmd, code, rp.body)
	}
	return m, nil
}

// restJourney is the journey through the gateway with curl alone, as a person without gRPC makes
// it: browse the catalog, sign up, log in, place an order, read it, cancel it while watching its
// payment's events (newline-delimited JSON and Server-Sent Events), meet the JSON errors, and fetch
// the OpenAPI document and the storefront page.
func (r runner) restJourney(ctx context.Context) error {
	if _, err := exec.LookPath(r.cfg.curl); err != nil {
		return fmt.Errorf("the REST journey runs curl, which is missing (%v): install it (apt-get install curl) or pass -curl", err)
	}
	gw := r.cfg.gateway
	r.step("REST through the gateway at %s, with curl", gw)

	r.step("browse the catalog with no token")
	products, err := r.curlOK(ctx, "GET", "/v1/products", "", nil)
	if err != nil {
		return err
	}
	if list, _ := get(products, "products").([]any); len(list) == 0 {
		return fmt.Errorf("GET /v1/products: no products in %v", products)
	}

	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := "rest" + hex.EncodeToString(suffix)
	email := name + "@example.com"
	r.step("sign up %s and log in", email)
	created, err := r.curlOK(ctx, "POST", "/v1/users", "", map[string]any{"email": email, "username": name, "password": "correct horse", "givenName": "Rest"})
	if err != nil {
		return err
	}
	if err := expect("POST /v1/users", created, "USER_STATUS_ACTIVE", "user", "status"); err != nil {
		return err
	}
	login, err := r.curlOK(ctx, "POST", "/v1/auth:login", "", map[string]any{"username": name, "password": "correct horse"})
	if err != nil {
		return err
	}
	token := str(login, "accessToken")
	if token == "" {
		return fmt.Errorf("POST /v1/auth:login: no accessToken in the answer")
	}

	r.step("place an order with the bearer token and read it back")
	order, err := r.curlOK(ctx, "POST", "/v1/orders", token, map[string]any{
		"items":              []any{map[string]any{"sku": "BOOK-1", "quantity": 1}},
		"paymentMethodToken": "tok_approve", "idempotencyKey": name + "-paid"})
	if err != nil {
		return err
	}
	if err := expect("POST /v1/orders", order, "ORDER_STATUS_PAID", "order", "status"); err != nil {
		return err
	}
	orderID := str(order, "order", "id")
	got, err := r.curlOK(ctx, "GET", "/v1/orders/"+url.PathEscape(orderID), token, nil)
	if err != nil {
		return err
	}
	if err := expect("GET /v1/orders/{id}", got, "ORDER_STATUS_PAID", "order", "status"); err != nil {
		return err
	}

	r.step("cancel it while watching its payment's events, as NDJSON and as Server-Sent Events")
	if err := r.cancelWatched(ctx, token, orderID); err != nil {
		return err
	}

	r.step("errors are JSON google.rpc.Status with the HTTP status of their gRPC code")
	bad, err := r.curlFails(ctx, 400, 3, "GET", "/v1/orders/not-a-uuid", token, nil)
	if err != nil {
		return err
	}
	if !hasFieldViolation(bad, "id") {
		answer, _ := json.Marshal(bad)
		return fmt.Errorf("GET /v1/orders/not-a-uuid: no field violation of id in the details: %s", answer)
	}
	if _, err := r.curlFails(ctx, 401, 16, "GET", "/v1/orders", "", nil); err != nil {
		return err
	}

	r.step("the OpenAPI document and the storefront page")
	doc, err := r.curl(ctx, "GET", "/openapi.json", "", nil)
	if err != nil {
		return err
	}
	m, err := doc.want(200, "application/json")
	if err != nil {
		return err
	}
	if paths, _ := get(m, "paths").(map[string]any); paths["/v1/orders"] == nil {
		return fmt.Errorf("%s: the document has no /v1/orders path", doc.cmd)
	}
	page, err := r.curl(ctx, "GET", "/", "", nil)
	if err != nil {
		return err
	}
	if _, err := page.want(200, "text/html"); err != nil {
		return err
	}
	return nil
}

// hasFieldViolation reports whether a google.rpc.Status carries a BadRequest with a violation of
// field.
func hasFieldViolation(st map[string]any, field string) bool {
	details, _ := get(st, "details").([]any)
	for _, d := range details {
		dm, _ := d.(map[string]any)
		if !strings.HasSuffix(str(dm, "@type"), "google.rpc.BadRequest") {
			continue
		}
		violations, _ := get(dm, "fieldViolations").([]any)
		for _, v := range violations {
			vm, _ := v.(map[string]any)
			if str(vm, "field") == field {
				return true
			}
		}
	}
	return false
}

// watchFor is how long each watch of cancelWatched lasts (curl --max-time): the cancellation
// happens within it.
const watchFor = 8 * time.Second

// cancelWatched cancels the order while two curls watch its payment's events, one as
// newline-delimited JSON and one as Server-Sent Events, and checks that each saw the refund.
func (r runner) cancelWatched(ctx context.Context, token, orderID string) error {
	path := "/v1/payments:watch?orderId=" + url.QueryEscape(orderID)
	maxTime := []string{"-N", "--max-time", strconv.Itoa(int(watchFor / time.Second))}
	kinds := []struct {
		name  string
		extra []string
	}{
		{"NDJSON", maxTime},
		{"SSE", append([]string{"-H", "Accept: text/event-stream"}, maxTime...)},
	}
	outs := make([]bytes.Buffer, len(kinds))
	errs := make([]error, len(kinds))
	var wg sync.WaitGroup
	for i, k := range kinds {
		args := r.curlArgs("GET", path, token, nil, k.extra...)
		r.step("  $ %s", shown(args))
		cmd := exec.CommandContext(ctx, r.cfg.curl, args...)
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &outs[i], &stderr
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("%s: %w", shown(args), err)
		}
		wg.Go(func() {
			// A watch never ends by itself: curl stops it at --max-time, exiting with 28.
			if err := cmd.Wait(); err != nil {
				if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 28 {
					errs[i] = fmt.Errorf("%s: %v\n%s", shown(args), err, stderr.String())
				}
			}
		})
	}
	// The watches see only events after they subscribed, and nothing outside says when that is:
	// two seconds is ample on loopback, and the order is cancelled well within the watches' time.
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Second):
	}
	cancelled, err := r.curlOK(ctx, "POST", "/v1/orders/"+url.PathEscape(orderID)+":cancel", token, map[string]any{"reason": "REST smoke"})
	if err == nil {
		err = expect("POST /v1/orders/{id}:cancel", cancelled, "ORDER_STATUS_CANCELLED", "order", "status")
	}
	wg.Wait()
	if err != nil {
		return err
	}
	for i, k := range kinds {
		if errs[i] != nil {
			return errs[i]
		}
		out := outs[i].String()
		r.step("  %s: %s", k.name, firstLine(out))
		if err := watched(k.name, out, orderID); err != nil {
			return fmt.Errorf("%s: %w", shown(r.curlArgs("GET", path, token, nil, k.extra...)), err)
		}
	}
	return nil
}

// watched checks a watch's output for an event of the order's payment: NDJSON lines
// {"result":{"event":...}}, or SSE "data: {...}" lines holding the same.
func watched(kind, out, orderID string) error {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if kind == "SSE" {
			data, ok := strings.CutPrefix(line, "data:")
			if !ok {
				continue
			}
			line = strings.TrimSpace(data)
		}
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil {
			continue
		}
		// grpc-gateway wraps each message as {"result": message}; an SSE writer may send it bare.
		if str(m, "result", "event", "payment", "orderId") == orderID || str(m, "event", "payment", "orderId") == orderID {
			return nil
		}
	}
	return fmt.Errorf("no event of order %s among the %s lines:\n%s", orderID, kind, out)
}

// firstLine is the first line of s, to show one streamed message.
func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimLeft(s, "\n"), "\n")
	if len(line) > 200 {
		line = line[:200] + "..."
	}
	return line
}
