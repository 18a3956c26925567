package gateway

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
)

// One trace spans an order placed over REST: the gateway's call, the order service's CreateOrder
// and the payment call it makes, all under one trace id, as every process exports to the test's
// OTLP receiver. (An active account's order asks the user service nothing: its token says it is
// active; issue 18, the user-check hop.)
func TestOneTraceSpansGatewayOrderAndPayment(t *testing.T) {
	ada := signUp(t, "spanned")
	o := createOrder(t, ada, "traced-"+suffix())
	want := []string{
		"gateway ",
		"order meshmart.order.v1.OrderService/CreateOrder",
		"payment meshmart.payment.v1.PaymentService/CreatePayment",
	}
	var found string
	testkit.Eventually(t, 15*time.Second, "a trace of CreateOrder from the gateway to order and payment", func() (bool, string) {
		traces := shared.traces.All()
		for id, names := range traces {
			missing := 0
			for _, w := range want {
				if !slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, w) }) {
					missing++
				}
			}
			if missing == 0 {
				found = id
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d traces received", len(traces))
	})
	t.Logf("order %s: trace %s: %v", o.GetId(), found, shared.traces.Trace(found))
}
