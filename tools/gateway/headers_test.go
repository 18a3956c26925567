package gateway

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
)

// The request id a client sends comes back in the answer and reaches the service, whose log line
// of the call carries it: one id follows a request from the browser to the service's log.
func TestRequestIDIsEchoedAndLogged(t *testing.T) {
	ada := signUp(t, "traced")
	id := "e2e-" + suffix()
	resp := do(t, request{method: "GET", path: "/v1/users/" + ada.id, token: ada.token(), header: http.Header{"X-Request-Id": {id}}})
	resp.ok(t, nil)
	if got := resp.Header.Get("X-Request-Id"); got != id {
		t.Errorf("X-Request-Id in the answer: %q, want %q", got, id)
	}
	testkit.Eventually(t, 5*time.Second, "the user service's log line of the call", func() (bool, string) {
		for line := range strings.Lines(rig(t).Log.String()) {
			if strings.HasPrefix(line, "user-1") && strings.Contains(line, id) && strings.Contains(line, "GetUser") {
				return true, ""
			}
		}
		return false, "no line of user-1 with " + id
	})
}

// Headers outside the gateway's allow-list reach no service: grpc-gateway's default turns any
// Grpc-Metadata-* header into metadata, which would let a browser send an authorization or a
// request id past the gateway's rules.
func TestHeadersOutsideTheAllowListHaveNoEffect(t *testing.T) {
	ada, adm := signUp(t, "sneaky"), admin(t)
	smuggled := http.Header{
		"Grpc-Metadata-Authorization": {"Bearer " + adm.token()},
		"Grpc-Metadata-Role":          {"admin"},
		"X-Evil":                      {"1"},
	}
	// Without an Authorization header, the admin's token in Grpc-Metadata-Authorization is
	// not a credential.
	do(t, request{method: "GET", path: "/v1/users", header: smuggled}).status(t, http.StatusUnauthorized)
	// With the user's own, the smuggled one does not make the user an admin.
	do(t, request{method: "GET", path: "/v1/users", token: ada.token(), header: smuggled}).status(t, http.StatusForbidden)

	forged := "forged-" + suffix()
	resp := do(t, request{method: "GET", path: "/v1/users/" + ada.id, token: ada.token(), header: http.Header{"Grpc-Metadata-X-Request-Id": {forged}}})
	resp.ok(t, nil)
	if got := resp.Header.Get("X-Request-Id"); got == forged {
		t.Errorf("the request id came from Grpc-Metadata-X-Request-Id")
	}
	time.Sleep(500 * time.Millisecond) // the service's log line, had it one
	if strings.Contains(rig(t).Log.String(), forged) {
		t.Errorf("a service logged the request id %s of Grpc-Metadata-X-Request-Id", forged)
	}
}
