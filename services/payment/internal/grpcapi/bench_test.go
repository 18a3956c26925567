package grpcapi_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	"github.com/meshmart/meshmart/services/payment/internal/grpcapi"
	"github.com/meshmart/meshmart/services/payment/internal/payment"
	"github.com/meshmart/meshmart/services/payment/internal/store"
)

// barePayments approves every charge from memory on a plain grpc-go server: the baseline.
type barePayments struct {
	paymentv1.UnimplementedPaymentServiceServer
}

func (barePayments) CreatePayment(_ context.Context, req *paymentv1.CreatePaymentRequest) (*paymentv1.CreatePaymentResponse, error) {
	return &paymentv1.CreatePaymentResponse{Payment: &paymentv1.Payment{Id: uuid.NewString(), OrderId: req.GetOrderId(),
		Amount: req.GetAmount(), Status: paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED}}, nil
}

// benchPKI gives the payment service its identity and the order service the one it calls with:
// both servers below serve mutual TLS with the same certificate and identity.ServerConfig, and
// every client calls as the order service (identity.ClientConfig), the only caller
// CreatePayment's policy admits.
type benchPKI struct {
	testkit.PKI
	client credentials.TransportCredentials
}

func newBenchPKI(b *testing.B) benchPKI {
	pki := testkit.NewPKI(b, "payment", "order")
	order := pki.Identity("order")
	tc, err := identity.ClientConfig(order, order, testkit.TrustDomain(), "payment")
	if err != nil {
		b.Fatal(err)
	}
	return benchPKI{PKI: pki, client: credentials.NewTLS(tc)}
}

func dial(b *testing.B, addr string, pki benchPKI) paymentv1.PaymentServiceClient {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(pki.client))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return paymentv1.NewPaymentServiceClient(cc)
}

func bareServer(b *testing.B, pki benchPKI) paymentv1.PaymentServiceClient {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tc, err := identity.ServerConfig(pki.Identity("payment"))
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	paymentv1.RegisterPaymentServiceServer(srv, barePayments{})
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return dial(b, lis.Addr().String(), pki)
}

func chassisServer(b *testing.B, dsn string, keys testkit.Keys, pki benchPKI) paymentv1.PaymentServiceClient {
	payments, err := store.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { payments.Close() })
	cfg := testkit.TestConfig()
	cfg.AuthPublicKey = keys.PublicKeyFile
	pki.Configure(&cfg, "payment")
	// Only the order service may create payments: the benchmark calls as the order service does,
	// with its certificate, forwarding a user's token.
	srv, err := server.New("payment", cfg, testkit.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.RegisterService(&paymentv1.PaymentService_ServiceDesc,
		grpcapi.New(payment.NewService(payments, payment.Simulator{}, time.Second), testkit.DiscardLogger(), time.Second)); err != nil {
		b.Fatal(err)
	}
	return dial(b, testkit.Serve(b, srv).Addr, pki)
}

// BenchmarkCharge measures CreatePayment through the full chassis on SQLite and PostgreSQL with a
// fresh idempotency key per call (insert, claim, processor, settle with two events) and with one
// repeated key (the replay answer), beside a bare grpc-go server approving from memory, in
// alternating rounds of one run; every server serves mutual TLS and the client calls as the order
// service. Run it with
//
//	make bench-payment
func BenchmarkCharge(b *testing.B) {
	const (
		workers = 16
		rounds  = 3
		round   = time.Second
	)
	keys := testkit.NewKeys(b)
	pki := newBenchPKI(b)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization",
		"Bearer "+keys.Token(b, "00000000-0000-4000-8000-00000000be7c", auth.RoleUser))
	var seq atomic.Int64
	req := func(key string) *paymentv1.CreatePaymentRequest { return chargeReq(payment.TokenApprove, key, 1999) }
	type row struct {
		name   string
		client paymentv1.PaymentServiceClient
		key    func() string
	}
	fresh := func() string { return fmt.Sprint("k", seq.Add(1)) }
	repeated := func() string { return "the-same-key" }
	sqlite, postgres := chassisServer(b, testkit.SQLitePath(b), keys, pki), chassisServer(b, testkit.PostgresURL(b), keys, pki)
	rows := []row{
		{"bare grpc-go, memory", bareServer(b, pki), fresh},
		{"chassis + SQLite, new key", sqlite, fresh},
		{"chassis + SQLite, repeated key", sqlite, repeated},
		{"chassis + PostgreSQL, new key", postgres, fresh},
		{"chassis + PostgreSQL, repeated key", postgres, repeated},
	}
	for range b.N {
		results := make([]testkit.LoadResult, len(rows))
		for range rounds {
			for i, r := range rows {
				results[i].Add(testkit.Load(workers, round, func() error {
					_, err := r.client.CreatePayment(ctx, req(r.key()))
					return err
				}))
			}
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "CreatePayment\tcalls/s\tp50\tp99\terrors\tthroughput vs bare\tvs new key\t\n")
		for i, r := range rows {
			res := results[i]
			vsNew := ""
			if i == 2 || i == 4 {
				vsNew = fmt.Sprintf("%.2fx", res.Rate()/results[i-1].Rate())
			}
			fmt.Fprintf(w, "%s\t%.0f\t%v\t%v\t%d\t%.3f\t%s\t\n", r.name, res.Rate(), res.Percentile(0.5).Round(time.Microsecond),
				res.Percentile(0.99).Round(time.Microsecond), res.Errors, res.Rate()/results[0].Rate(), vsNew)
			if res.Errors > 0 {
				b.Errorf("%s: %d errors", r.name, res.Errors)
			}
		}
		w.Flush()
		fmt.Printf("(%d workers, %d alternating rounds of %v per row)\n", workers, rounds, round)
	}
}
