package gateway

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The services key their per-address limits on the client the gateway saw, not on what the
// client wrote: X-Forwarded-For sent by a browser is followed by the gateway's own word (the
// address it was called from), and the services take only that last element, from the gateway
// alone. Observed through the user service's per-address login backoff (10 free failures): failed
// logins from one address, each with another spoofed X-Forwarded-For, are all counted against that
// address and end in 429; another address still gets its own allowance. The test's requests leave
// from 127.0.0.3 and 127.0.0.4 (all of 127/8 is loopback on Linux), so the backoff it provokes
// never reaches the other tests, which call from 127.0.0.1.
func TestClientAddressIsTheGatewaysWordNotTheClients(t *testing.T) {
	spoofer, bystander := clientFrom(t, "127.0.0.3"), clientFrom(t, "127.0.0.4")
	limited := 0
	for i := range 15 {
		resp := failLogin(t, spoofer, fmt.Sprintf("203.0.113.%d, 198.51.100.%d", i+1, i+1))
		if resp == http.StatusTooManyRequests {
			limited = i + 1
			break
		}
		if resp != http.StatusUnauthorized {
			t.Fatalf("failed login %d: HTTP %d, want 401 or 429", i+1, resp)
		}
	}
	if limited == 0 {
		t.Fatalf("15 failed logins from one address under 15 spoofed X-Forwarded-For were never refused: the spoofed addresses were believed")
	}
	t.Logf("refused at attempt %d", limited)
	if got := failLogin(t, bystander, ""); got != http.StatusUnauthorized {
		t.Errorf("a failed login from another address: HTTP %d, want 401 (its own allowance)", got)
	}
}

// clientFrom returns an HTTP client whose connections leave from the local address ip.
func clientFrom(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// failLogin logs in to an account that does not exist (a new one every time, so that only the
// address's backoff can refuse it) with X-Forwarded-For xff when set, and returns the HTTP status.
func failLogin(t *testing.T, c *http.Client, xff string) int {
	t.Helper()
	body := fmt.Sprintf(`{"email":"nobody-%s@example.com","password":"not-the-password"}`, suffix())
	req, err := http.NewRequest("POST", rig(t).GatewayURL+"/v1/auth:login", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}
