package gateway

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// CORS: a preflight from an allowed origin (a documented dev origin, or the gateway's own) gets
// the allow headers naming that origin, the method and the headers asked for; one from any other
// origin gets none, so the browser refuses the call. No answer ever allows every origin with
// credentials.
func TestCORS(t *testing.T) {
	own := rig(t).GatewayURL
	tests := []struct {
		name, origin string
		allowed      bool
	}{
		{"a dev origin", "http://localhost:5173", true},
		{"the gateway's own origin", own, true},
		{"another origin", "http://evil.example", false},
		{"a dev origin's look-alike", "http://localhost:5173.evil.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pre := do(t, request{method: "OPTIONS", path: "/v1/orders", header: http.Header{
				"Origin":                         {tt.origin},
				"Access-Control-Request-Method":  {"POST"},
				"Access-Control-Request-Headers": {"authorization,content-type"},
			}})
			noWildcardWithCredentials(t, pre)
			get := do(t, request{method: "GET", path: "/v1/products?pageSize=1", header: http.Header{"Origin": {tt.origin}}})
			noWildcardWithCredentials(t, get)
			if !tt.allowed {
				for _, r := range []response{pre, get} {
					for _, h := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Allow-Credentials"} {
						if v := r.Header.Get(h); v != "" {
							t.Errorf("%s from %s: %s: %q, want none", r.Request.Method, tt.origin, h, v)
						}
					}
				}
				return
			}
			if pre.StatusCode != http.StatusOK && pre.StatusCode != http.StatusNoContent {
				t.Errorf("preflight: HTTP %d, want 200 or 204: %s", pre.StatusCode, pre.body)
			}
			for _, r := range []response{pre, get} {
				if got := r.Header.Get("Access-Control-Allow-Origin"); got != tt.origin {
					t.Errorf("%s: Access-Control-Allow-Origin %q, want %q", r.Request.Method, got, tt.origin)
				}
				if !listHas(r.Header.Values("Vary"), "Origin") {
					t.Errorf("%s: Vary %q, want Origin in it (the answer depends on it)", r.Request.Method, r.Header.Values("Vary"))
				}
			}
			if m := pre.Header.Values("Access-Control-Allow-Methods"); !listHas(m, "POST") {
				t.Errorf("preflight: Access-Control-Allow-Methods %q, want POST in it", m)
			}
			if h := pre.Header.Values("Access-Control-Allow-Headers"); !listHas(h, "Authorization") || !listHas(h, "Content-Type") {
				t.Errorf("preflight: Access-Control-Allow-Headers %q, want Authorization and Content-Type in it", h)
			}
			if get.StatusCode != http.StatusOK {
				t.Errorf("GET from %s: HTTP %d", tt.origin, get.StatusCode)
			}
		})
	}
}

func noWildcardWithCredentials(t *testing.T, r response) {
	t.Helper()
	if r.Header.Get("Access-Control-Allow-Origin") == "*" && strings.EqualFold(r.Header.Get("Access-Control-Allow-Credentials"), "true") {
		t.Errorf("%s: Access-Control-Allow-Origin * with credentials", r.Request.Method)
	}
}

// listHas reports whether the comma-separated header values hold want, case-insensitively.
func listHas(values []string, want string) bool {
	return slices.ContainsFunc(values, func(v string) bool {
		return slices.ContainsFunc(strings.Split(v, ","), func(item string) bool { return strings.EqualFold(strings.TrimSpace(item), want) })
	})
}
