package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshmart/meshmart/pkg/testkit"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// ExportUsers over REST is newline-delimited JSON: one {"result":{"user":...}} object per line,
// every account in it.
func TestExportUsersIsNewlineDelimitedJSON(t *testing.T) {
	a, b := signUp(t, "exported"), signUp(t, "exported")
	resp := do(t, request{method: "GET", path: "/v1/users:export", token: admin(t).token()})
	resp.ok(t, nil)
	if !bytes.HasSuffix(resp.body, []byte("\n")) {
		t.Errorf("the export does not end with a newline: %q", resp.body[max(0, len(resp.body)-40):])
	}
	ids := exportedIDs(t, admin(t).token())
	for _, id := range []string{a.id, b.id} {
		if !slices.Contains(ids, id) {
			t.Errorf("the export of %d accounts lacks %s", len(ids), id)
		}
	}
}

// WatchPayments with Accept: text/event-stream answers Server-Sent Events, one data: line per
// payment event, as the payments happen.
func TestWatchPaymentsAsServerSentEvents(t *testing.T) {
	watchWhileOrdering(t, signUp(t, "watcher"), "text/event-stream")
}

// watchWhileOrdering opens GET /v1/payments:watch?userId= as a (with accept, when set), places an
// order once the payment service holds the stream, and fails unless the order's payment arrives on
// the stream within 15 seconds.
func watchWhileOrdering(t *testing.T, a account, accept string) {
	t.Helper()
	pay := rig(t).Instance("payment-1").MetricsAddr
	before := openWatches(t, pay)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := newRequest(t, ctx, request{method: "GET", path: "/v1/payments:watch?userId=" + a.id, token: a.token()})
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	w := startWatch(req, accept == "text/event-stream")
	// The service sends the stream's headers with its first event, and grpc-gateway answers the
	// HTTP request only once it has them: the stream is known to be open from the service's side.
	testkit.Eventually(t, 10*time.Second, "the payment service holding the watch", func() (bool, string) {
		n := openWatches(t, pay)
		return n > before, fmt.Sprintf("%v open, %v before", n, before)
	})
	time.Sleep(300 * time.Millisecond) // the stream's subscription to the event feed follows its start
	o := createOrder(t, a, "watched-"+suffix())
	for {
		select {
		case ev, ok := <-w.events:
			if !ok {
				t.Fatalf("the watch ended before the payment of %s: %v", o.GetId(), w.err)
			}
			got := &paymentv1.WatchPaymentsResponse{}
			if err := protojson.Unmarshal(ev, got); err != nil {
				t.Fatalf("event %s: %v", ev, err)
			}
			if got.GetEvent().GetPayment().GetOrderId() != o.GetId() {
				continue
			}
			if accept == "text/event-stream" {
				if ct := w.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
					t.Errorf("Content-Type %q, want text/event-stream", ct)
				}
			}
			return
		case <-ctx.Done():
			t.Fatalf("no event of %s's payment within 20s", o.GetId())
		}
	}
}

// watch is a stream read in the background: each message, unwrapped, on events, closed at its
// end; resp is set before the first event.
type watch struct {
	events chan json.RawMessage
	resp   *http.Response
	err    error // why events closed, once it is
}

func startWatch(req *http.Request, sse bool) *watch {
	w := &watch{events: make(chan json.RawMessage, 64)}
	go func() {
		defer close(w.events)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			w.err = err
			return
		}
		defer resp.Body.Close()
		w.resp = resp
		if resp.StatusCode != http.StatusOK {
			w.err = fmt.Errorf("HTTP %d", resp.StatusCode)
			return
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if sse {
				data, ok := bytes.CutPrefix(line, []byte("data:"))
				if !ok {
					continue // event:, id:, comments and the blank line between events
				}
				line = bytes.TrimSpace(data)
			}
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			var env struct {
				Result json.RawMessage `json:"result"`
				Error  json.RawMessage `json:"error"`
			}
			if err := json.Unmarshal(line, &env); err != nil {
				w.err = fmt.Errorf("stream line %q: %w", line, err)
				return
			}
			switch {
			case env.Error != nil:
				w.err = fmt.Errorf("stream error %s", env.Error)
				return
			case env.Result != nil:
				w.events <- env.Result
			default:
				w.events <- slices.Clone(line) // an SSE event may carry the message itself
			}
		}
		w.err = sc.Err()
	}()
	return w
}

// A browser that goes away ends its stream on the service: closing the client's connection to the
// gateway cancels the gateway's call, and the payment service finishes the stream as Canceled.
func TestClosingAWatchEndsItOnThePaymentService(t *testing.T) {
	a := signUp(t, "leaver")
	pay := rig(t).Instance("payment-1").MetricsAddr
	// Earlier tests' watches end by the same path; wait them out so the counts are this test's.
	testkit.Eventually(t, 10*time.Second, "no watch open on the payment service", func() (bool, string) {
		n := openWatches(t, pay)
		return n == 0, fmt.Sprintf("%v open", n)
	})
	canceledBefore := handledWith(t, pay, "WatchPayments", "Canceled")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWatch(newRequest(t, ctx, request{method: "GET", path: "/v1/payments:watch?userId=" + a.id, token: a.token(),
		header: http.Header{"Accept": {"text/event-stream"}}}), true)
	testkit.Eventually(t, 10*time.Second, "the payment service holding the watch", func() (bool, string) {
		n := openWatches(t, pay)
		return n == 1, fmt.Sprintf("%v open", n)
	})
	cancel()
	for range w.events { // the client's side ends at once
	}
	testkit.Eventually(t, 10*time.Second, "the payment service ending the watch", func() (bool, string) {
		n := openWatches(t, pay)
		return n == 0, fmt.Sprintf("%v open", n)
	})
	if got := handledWith(t, pay, "WatchPayments", "Canceled"); got != canceledBefore+1 {
		t.Errorf("WatchPayments handled as Canceled: %v, want %v", got, canceledBefore+1)
	}
}

// openWatches is how many WatchPayments streams the payment instance at metricsAddr holds.
func openWatches(t *testing.T, metricsAddr string) float64 {
	t.Helper()
	n, err := loadkit.Open(metricsAddr, "WatchPayments")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// handledWith reads grpc_server_handled_total of method with grpc_code code from an instance's
// /metrics.
func handledWith(t *testing.T, metricsAddr, method, code string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_handled_total{") || !strings.Contains(line, `grpc_method="`+method+`"`) ||
			!strings.Contains(line, `grpc_code="`+code+`"`) {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		total += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
