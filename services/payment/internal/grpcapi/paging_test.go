package grpcapi_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/meshmart/meshmart/pkg/testkit"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

// TestPageTokens pages through payments across two replicas sharing one database, each page
// asked of the replica that did not issue its token; a token reused with another filter, or
// edited, is an InvalidArgument naming page_token.
func TestPageTokens(t *testing.T) {
	t.Parallel()
	path, keys := testkit.SQLitePath(t), testkit.NewKeys(t)
	a, as := newReplica(t, path, keys)
	b, _ := newReplica(t, path, keys)
	replicas := []paymentv1.PaymentServiceClient{a, b}
	for i := range 5 {
		if _, err := replicas[i%2].CreatePayment(as["alice via order"], chargeReq(payment.TokenApprove, fmt.Sprint("k", i), 100)); err != nil {
			t.Fatal(err)
		}
	}
	listed := 0
	tokens := []string{""}
	for i := 0; i == 0 || tokens[i] != ""; i++ {
		page, err := replicas[i%2].ListPayments(as["alice"], &paymentv1.ListPaymentsRequest{OrderId: orderID, PageSize: 2, PageToken: tokens[i]})
		if err != nil {
			t.Fatalf("page %d: %v", i, err)
		}
		listed += len(page.GetPayments())
		tokens = append(tokens, page.GetNextPageToken())
	}
	if listed != 5 {
		t.Errorf("listed %d payments, want 5", listed)
	}

	next := tokens[1]
	bad := []*paymentv1.ListPaymentsRequest{{PageToken: next}, {PageToken: next, OrderId: "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a91"}}
	for _, token := range testkit.TamperedTokens(next) {
		bad = append(bad, &paymentv1.ListPaymentsRequest{PageToken: token, OrderId: orderID})
	}
	for _, req := range bad {
		_, err := b.ListPayments(as["alice"], req)
		if !slices.Equal(testkit.InvalidFields(err), []string{"page_token"}) {
			t.Errorf("ListPayments(%v) = %v, want InvalidArgument on page_token", req, err)
		}
	}
}
