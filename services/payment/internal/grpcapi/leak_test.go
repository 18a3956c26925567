package grpcapi_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

// TestStoreFailureTextIsNotSent breaks the database under a running service: each call is told
// Internal and nothing of the store's error, over the real interceptor chain.
func TestStoreFailureTextIsNotSent(t *testing.T) {
	t.Parallel()
	c, as, payments := newClientAndStore(t)
	paid, err := c.CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, "k1", 1000))
	if err != nil {
		t.Fatal(err)
	}
	if err := payments.Close(); err != nil {
		t.Fatal(err)
	}
	id := paid.GetPayment().GetId()
	calls := map[string]func() error{
		"CreatePayment": func() error {
			_, err := c.CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, "k2", 1000))
			return err
		},
		"GetPayment": func() error {
			_, err := c.GetPayment(as["alice"], &paymentv1.GetPaymentRequest{Id: id})
			return err
		},
		"RefundPayment": func() error {
			_, err := c.RefundPayment(as["alice via order"], &paymentv1.RefundPaymentRequest{PaymentId: id, IdempotencyKey: "r1", Reason: "test"})
			return err
		},
	}
	for name, call := range calls {
		st := status.Convert(call())
		if st.Code() != codes.Internal || st.Message() != "internal error" || len(st.Details()) != 0 {
			t.Errorf("%s on a closed database = %v, want Internal with nothing of the cause", name, st.Err())
		}
	}
}
