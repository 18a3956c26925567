package client_test

import (
	"encoding/json"
	"slices"
	"testing"

	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/meshmart/meshmart/pkg/client"
	_ "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	_ "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	_ "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// TestServiceConfigRetriesOnlyIdempotentMethods derives the retry policy from the contracts'
// idempotency levels.
func TestServiceConfigRetriesOnlyIdempotentMethods(t *testing.T) {
	t.Parallel()
	sc, err := client.ServiceConfig(protoregistry.GlobalFiles)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		LoadBalancingConfig []map[string]any `json:"loadBalancingConfig"`
		HealthCheckConfig   map[string]any   `json:"healthCheckConfig"`
		MethodConfig        []struct {
			Name        []struct{ Service, Method string } `json:"name"`
			RetryPolicy struct {
				RetryableStatusCodes []string `json:"retryableStatusCodes"`
			} `json:"retryPolicy"`
		} `json:"methodConfig"`
	}
	if err := json.Unmarshal([]byte(sc), &cfg); err != nil {
		t.Fatal(err)
	}
	if _, ok := cfg.LoadBalancingConfig[0]["meshmart_round_robin"]; !ok || cfg.HealthCheckConfig == nil {
		t.Errorf("service config lacks meshmart_round_robin or health checking: %s", sc)
	}
	var retried []string
	for _, n := range cfg.MethodConfig[0].Name {
		retried = append(retried, n.Service+"/"+n.Method)
	}
	for _, m := range []string{"meshmart.user.v1.UserService/GetUser", "meshmart.payment.v1.PaymentService/CreatePayment", "meshmart.order.v1.OrderService/CreateOrder", "meshmart.user.v1.UserService/ExportUsers"} {
		if !slices.Contains(retried, m) {
			t.Errorf("%s is not retried", m)
		}
	}
	for _, m := range []string{"meshmart.user.v1.UserService/CreateUser", "meshmart.user.v1.UserService/ImportUsers", "meshmart.order.v1.OrderService/TrackOrders"} {
		if slices.Contains(retried, m) {
			t.Errorf("%s, which is not idempotent, is retried", m)
		}
	}
	if got := cfg.MethodConfig[0].RetryPolicy.RetryableStatusCodes; !slices.Equal(got, []string{"UNAVAILABLE"}) {
		t.Errorf("retryable codes = %v, want only UNAVAILABLE", got)
	}
}
