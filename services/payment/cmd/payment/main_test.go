package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
)

// TestEndToEnd runs two replicas of the real binary on one database, registered in a real Consul
// agent, and calls them through consul:// with round-robin: charges land on both, the one watch
// stream sees the events both wrote, and a timed-out charge is settled by its retry.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	bin := testkit.BuildBinary(t, ".")
	agent := testkit.StartConsul(t)
	keys := testkit.NewKeys(t)
	testkit.ForEachDatabase(t, func(t *testing.T, db testkit.Database) { endToEnd(t, bin, agent, keys, db.New(t), db.Name) })
}

func endToEnd(t *testing.T, bin string, agent *testkit.Consul, keys testkit.Keys, dsn, tag string) {
	if tag == "sqlite" {
		// Two processes share the file; make sure its directory exists for both.
		if err := os.MkdirAll(filepath.Dir(dsn), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pki := testkit.NewPKI(t, "payment", "order")
	for i := range 2 {
		testkit.StartProcess(t, fmt.Sprintf("payment replica %d", i), bin, []string{"-grpc-addr", "127.0.0.1:0", "-http-addr", "",
			"-consul-addr", agent.Addr, "-tags", tag, "-check-interval", "500ms", "-drain-delay", "100ms",
			"-auth-public-key", keys.PublicKeyFile, "-processor-timeout", "300ms", "-watch-interval", "50ms"},
			append(pki.Env("payment"), "DATABASE_URL="+dsn)...)
	}
	eventuallyPassing(t, agent, tag, 2)

	// The test calls as the order service, the only caller CreatePayment allows, forwarding a
	// user's token as the order service does.
	cc, err := client.Dial("consul://"+agent.Addr+"/payment?tag="+tag, testkit.Logger(t), pki.As("order"))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	payments := paymentv1.NewPaymentServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	user := "00000000-0000-4000-8000-0000000000e2"
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+keys.Token(t, user, auth.RoleUser))

	watch, err := payments.WatchPayments(authed, &paymentv1.WatchPaymentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the stream takes its starting point

	replicas := map[string]bool{} // the replicas that answered charges
	charge := func(token, key string) *paymentv1.Payment {
		t.Helper()
		var p peer.Peer
		resp, err := payments.CreatePayment(authed, &paymentv1.CreatePaymentRequest{
			OrderId: "0b3f8a52-4c1e-4f7e-9a51-2f6c8d3e1a90", Amount: &moneyv1.Money{CurrencyCode: "EUR", MinorUnits: 1250},
			PaymentMethodToken: token, IdempotencyKey: key}, grpc.Peer(&p))
		if err != nil {
			t.Fatalf("CreatePayment %s: %v", key, err)
		}
		replicas[p.Addr.String()] = true
		return resp.GetPayment()
	}
	for i := range 4 {
		if p := charge(payment.TokenApprove, fmt.Sprint("k", i)); p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
			t.Fatalf("charge %d = %v", i, p)
		}
	}
	// The processor times out: the payment stays pending, and the retry settles it.
	slow := charge(payment.TokenTimeout, "slow")
	if slow.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_PENDING {
		t.Fatalf("timed-out charge = %v, want PENDING", slow)
	}
	settled := charge(payment.TokenTimeout, "slow")
	if settled.GetId() != slow.GetId() || settled.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
		t.Fatalf("retry = %v, want the same payment CAPTURED", settled)
	}

	if len(replicas) != 2 {
		t.Fatalf("charges answered by %d replicas, want both", len(replicas))
	}
	// Five captures, each authorised then captured: ten events, from both replicas, on one stream.
	for i := range 10 {
		resp, err := watch.Recv()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if resp.GetEvent().GetPayment().GetUserId() != user {
			t.Fatalf("event %d is not the user's: %v", i, resp.GetEvent())
		}
	}
	list, err := payments.ListPayments(authed, &paymentv1.ListPaymentsRequest{})
	if err != nil || len(list.GetPayments()) != 5 {
		t.Fatalf("ListPayments = %d, %v", len(list.GetPayments()), err)
	}
	// A client that is neither a signed-in user nor a service: TLS alone proves nothing.
	anonymous, err := client.Dial("consul://"+agent.Addr+"/payment?tag="+tag, testkit.Logger(t), pki.Anonymous())
	if err != nil {
		t.Fatal(err)
	}
	defer anonymous.Close()
	_, err = paymentv1.NewPaymentServiceClient(anonymous).GetPayment(ctx, &paymentv1.GetPaymentRequest{Id: slow.GetId()})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("GetPayment with neither a token nor a certificate = %v", err)
	}
}

func eventuallyPassing(t *testing.T, agent *testkit.Consul, tag string, n int) {
	t.Helper()
	testkit.Eventually(t, 20*time.Second, "passing payment instances tagged "+tag, func() (bool, string) {
		entries, _, err := agent.Client().Health().Service("payment", tag, true, nil)
		return err == nil && len(entries) == n, fmt.Sprintf("%d, want %d (%v)", len(entries), n, err)
	})
}
