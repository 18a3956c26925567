package gateway

import (
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/meshmart/meshmart/tools/loadkit"
)

// Every error of the real services reaches an HTTP client as a JSON google.rpc.Status, with the
// HTTP status of its gRPC code and its details; so do the gateway's own routing errors.
func TestErrorsAreJSONStatusesWithTheirHTTPStatus(t *testing.T) {
	ada, bob := signUp(t, "ada"), signUp(t, "bob")
	bobs := createOrder(t, bob, "bobs-"+suffix())
	tests := []struct {
		name    string
		req     request
		http    int
		code    codes.Code
		details func(t *testing.T, st *spb.Status)
	}{
		{"malformed id", request{method: "GET", path: "/v1/orders/not-a-uuid", token: ada.token()},
			http.StatusBadRequest, codes.InvalidArgument, func(t *testing.T, st *spb.Status) {
				br := detail[*errdetails.BadRequest](t, st)
				if len(br.GetFieldViolations()) == 0 || br.GetFieldViolations()[0].GetField() != "id" {
					t.Errorf("field violations %v, want one naming id", br.GetFieldViolations())
				}
			}},
		{"a price other than the catalog's", request{method: "POST", path: "/v1/orders", token: ada.token(), body: fmt.Sprintf(
			`{"items":[{"sku":"BOOK-1","quantity":1,"unitPriceMinor":"1"}],"paymentMethodToken":"tok_approve","idempotencyKey":"price-%s"}`, suffix())},
			http.StatusBadRequest, codes.FailedPrecondition, func(t *testing.T, st *spb.Status) {
				pf := detail[*errdetails.PreconditionFailure](t, st)
				if v := pf.GetViolations(); len(v) != 1 || v[0].GetType() != "PRICE" || v[0].GetSubject() != "BOOK-1" {
					t.Errorf("precondition violations %v, want one of type PRICE on BOOK-1", v)
				}
			}},
		{"no token", request{method: "GET", path: "/v1/orders"}, http.StatusUnauthorized, codes.Unauthenticated, nil},
		{"a garbage token", request{method: "GET", path: "/v1/orders", token: "garbage"}, http.StatusUnauthorized, codes.Unauthenticated, nil},
		{"a user on an admin route", request{method: "GET", path: "/v1/users", token: ada.token()}, http.StatusForbidden, codes.PermissionDenied, nil},
		// The order service refuses another user's order as PERMISSION_DENIED; the user service
		// hides another user's account as NOT_FOUND (UserService.GetUser). Through the gateway,
		// whose certificate proves a service, both once answered 200 with the other user's data.
		{"someone else's order", request{method: "GET", path: "/v1/orders/" + bobs.GetId(), token: ada.token()}, http.StatusForbidden, codes.PermissionDenied, nil},
		{"someone else's account", request{method: "GET", path: "/v1/users/" + bob.id, token: ada.token()}, http.StatusNotFound, codes.NotFound, nil},
		{"an unknown product", request{method: "GET", path: "/v1/products/NO-SUCH-" + suffix()}, http.StatusNotFound, codes.NotFound, nil},
		{"an unknown route", request{method: "GET", path: "/v1/no-such-thing"}, http.StatusNotFound, codes.NotFound, nil},
		{"a method the path does not take", request{method: "PUT", path: "/v1/products", body: `{}`}, http.StatusMethodNotAllowed, codes.Unimplemented, nil},
		{"signing up twice", request{method: "POST", path: "/v1/users", body: fmt.Sprintf(
			`{"email":%q,"username":"again-%s","password":%q,"givenName":"Ada"}`, ada.email, suffix(), loadkit.Password)},
			http.StatusConflict, codes.AlreadyExists, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := do(t, tt.req).status(t, tt.http)
			if codes.Code(st.GetCode()) != tt.code {
				t.Errorf("code %v (%q), want %v", codes.Code(st.GetCode()), st.GetMessage(), tt.code)
			}
			if tt.details != nil {
				tt.details(t, st)
			}
		})
	}
}

// detail returns the status's detail of type D, failing the test when there is none.
func detail[D proto.Message](t *testing.T, st *spb.Status) D {
	t.Helper()
	for _, a := range st.GetDetails() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("detail %s: %v", a.GetTypeUrl(), err)
		}
		if d, ok := m.(D); ok {
			return d
		}
	}
	var zero D
	t.Fatalf("no %T among the details %v", zero, st.GetDetails())
	return zero
}
