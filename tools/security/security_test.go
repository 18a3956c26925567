package security

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	moneyv1 "github.com/meshmart/meshmart/proto/meshmart/money/v1"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
	"github.com/meshmart/meshmart/tools/platform"
)

// The platforms the package's tests share, one per database: each started by the first test that
// needs it (the compose test needs none), stopped by TestMain.
var (
	sharedMu   sync.Mutex
	sharedRigs = map[string]*sharedRig{}
	sharedPG   *testkit.Postgres
	// platformEnv is added to the shared platforms' environment (loadkit.Options.Env): settings
	// an attack needs shortened, appended by its file's init.
	platformEnv []string
)

type sharedRig struct {
	rig *loadkit.Rig
	err error
	dir string
}

func TestMain(m *testing.M) {
	code := m.Run()
	for name, s := range sharedRigs {
		if s.rig != nil {
			if code != 0 {
				fmt.Fprintf(os.Stderr, "platform output (%s):\n%s", name, s.rig.Log)
			}
			s.rig.Close()
		}
		if s.dir != "" {
			os.RemoveAll(s.dir)
		}
	}
	if sharedPG != nil {
		sharedPG.Stop()
		sharedPG.Remove()
	}
	os.Exit(code)
}

// rig returns the shared platform on SQLite: two replicas of each service, on free ports.
func rig(t *testing.T) *loadkit.Rig { return rigOn(t, "sqlite") }

// eachDatabase runs test against the shared platform on SQLite, then against the one on
// PostgreSQL (one after the other: both on two cores at once would skew the timed attacks).
func eachDatabase(t *testing.T, test func(t *testing.T, r *loadkit.Rig)) {
	t.Helper()
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) { test(t, rigOn(t, db)) })
	}
}

// rigOn returns the shared platform on db ("sqlite" or "postgres"), starting it on first use.
func rigOn(t *testing.T, db string) *loadkit.Rig {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	s, ok := sharedRigs[db]
	if !ok {
		s = &sharedRig{}
		sharedRigs[db] = s
		start := time.Now()
		s.rig, s.dir, s.err = launch(testkit.RepoRoot(t), db)
		t.Logf("the shared platform on %s started in %v", db, time.Since(start).Round(100*time.Millisecond))
	}
	if s.err != nil {
		t.Fatal(s.err)
	}
	return s.rig
}

func launch(root, db string) (*loadkit.Rig, string, error) {
	dir, err := os.MkdirTemp("", "meshmart-security-"+db+"-")
	if err != nil {
		return nil, "", err
	}
	// Access tokens of 20 s (accessTTL), so that TestDeletedAccountLosesAccessWithinATokenLifetime
	// can wait one out; rig accounts renew theirs (loadkit.Account.In), so longer tests still run.
	// The per-address limit at its defaults (loadkit turns it off): the attacks are judged against
	// the limits a deployment gets.
	d := server.DefaultConfig("")
	env := append([]string{"MESHMART_TOKEN_TTL=" + accessTTL.String(),
		fmt.Sprintf("MESHMART_ADDRESS_RATE_LIMIT=%g", d.AddressRateLimit),
		fmt.Sprintf("MESHMART_ADDRESS_RATE_BURST=%d", d.AddressRateBurst),
	}, platformEnv...)
	opts := loadkit.Options{Replicas: 2, Env: env}
	if db == "postgres" {
		if sharedPG == nil {
			if sharedPG, err = testkit.LaunchPostgres(); err != nil {
				return nil, dir, err
			}
		}
		opts.Databases = map[string]string{}
		for _, svc := range []string{"user", "payment", "order"} {
			if opts.Databases[svc], err = sharedPG.CreateDatabase(); err != nil {
				return nil, dir, err
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := loadkit.Launch(ctx, root, dir, opts)
	return r, dir, err
}

// suffix makes the names a test signs up unique, so that the tests may run again (-count) on
// the same platform.
func suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: got %v (%v), want %v", what, got, err, want)
	}
}

// tokenRoles reads the roles claim of a token without verifying it: what the user service put in.
func tokenRoles(t *testing.T, token string) []string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Roles []string `json:"roles"`
	}
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	return claims.Roles
}

func logIn(t *testing.T, r *loadkit.Rig, email, password string) *userv1.LoginResponse {
	t.Helper()
	resp, err := r.Users.Login(callCtx(t), &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Email{Email: email}, Password: password})
	if err != nil {
		t.Fatalf("log %s in: %v", email, err)
	}
	return resp
}

// Attack: become an admin by signing up, with the email a service account used to have
// (order-service@meshmart.internal), with the admin's email in other letters, or with any fresh
// email; then grant oneself the admin role with UpdateUser.
//
// Defences: sign-up gives ROLE_USER alone whatever the email (no email list makes an admin: only
// `user admin` on the database does), emails are unique case-insensitively, and UpdateUser refuses
// a mask naming roles (INVALID_ARGUMENT). Granting admin by email, or letting UpdateUser change
// roles, fails this test.
func TestSignUpCannotMakeAnAdmin(t *testing.T) {
	r := rig(t)
	sfx := suffix()

	_, err := r.Users.CreateUser(callCtx(t), &userv1.CreateUserRequest{
		Email: strings.ToUpper(r.Admin.Email), Username: "admin-again-" + sfx, Password: loadkit.Password, GivenName: "Mallory"})
	wantCode(t, "sign up with the admin's email in capitals", err, codes.AlreadyExists)

	for _, email := range []string{"order-service@meshmart.internal", "mallory-" + sfx + "@example.com"} {
		t.Run(email, func(t *testing.T) {
			_, err := r.Users.CreateUser(callCtx(t), &userv1.CreateUserRequest{
				Email: email, Username: "mallory-" + suffix(), Password: loadkit.Password, GivenName: "Mallory"})
			// The service-looking email is free on a fresh platform; a second run (-count)
			// finds the account of the first, with the same password.
			if err != nil && !(status.Code(err) == codes.AlreadyExists && strings.HasSuffix(email, ".internal")) {
				t.Fatalf("sign up: %v", err)
			}
			login := logIn(t, r, email, loadkit.Password)
			if roles := tokenRoles(t, login.GetAccessToken()); !slices.Equal(roles, []string{auth.RoleUser}) {
				t.Errorf("the token's roles are %v, want [%s]", roles, auth.RoleUser)
			}
			ctx := bearer(callCtx(t), login.GetAccessToken())
			_, err = r.Users.ListUsers(ctx, &userv1.ListUsersRequest{})
			wantCode(t, "ListUsers", err, codes.PermissionDenied)

			id := login.GetUser().GetId()
			_, err = r.Users.UpdateUser(ctx, &userv1.UpdateUserRequest{
				User:       &userv1.User{Id: id, Roles: []userv1.Role{userv1.Role_ROLE_USER, userv1.Role_ROLE_ADMIN}},
				UpdateMask: &fieldmaskpb.FieldMask{Paths: []string{"roles"}},
			})
			wantCode(t, "UpdateUser of roles", err, codes.InvalidArgument)

			// Nothing changed: a new login still gets a user's token.
			again := logIn(t, r, email, loadkit.Password)
			if roles := tokenRoles(t, again.GetAccessToken()); !slices.Equal(roles, []string{auth.RoleUser}) {
				t.Errorf("after UpdateUser the token's roles are %v, want [%s]", roles, auth.RoleUser)
			}
			if got := again.GetUser().GetRoles(); !slices.Equal(got, []userv1.Role{userv1.Role_ROLE_USER}) {
				t.Errorf("after UpdateUser the account's roles are %v, want [ROLE_USER]", got)
			}
		})
	}

	// The real admin still is one.
	admin := r.LogInAdmin(t)
	if roles := tokenRoles(t, admin.Token); !slices.Contains(roles, auth.RoleAdmin) {
		t.Errorf("the admin's token has roles %v, want %s among them", roles, auth.RoleAdmin)
	}
	if _, err := r.Users.ListUsers(admin.In(callCtx(t)), &userv1.ListUsersRequest{PageSize: 1}); err != nil {
		t.Errorf("the admin's ListUsers: %v", err)
	}
}

// Attack: a user skips the order service and calls the payment service directly with their own
// valid token: CreatePayment for an order that does not exist (goods without paying for them
// through an order), and RefundPayment of their paid order's payment (money back, goods kept).
//
// Defence: the payment contract's policies (CreatePayment: the order service only; RefundPayment:
// the order service or admins), enforced by pkg/authz. Granting users either method fails this test.
func TestUserCannotCallServiceOnlyPaymentMethods(t *testing.T) {
	r := rig(t)
	a := r.SignUp(t, "direct-"+suffix())
	order, err := r.Orders.CreateOrder(a.In(callCtx(t)), loadkit.OrderRequest("direct-"+suffix()))
	if err != nil {
		t.Fatalf("CreateOrder: %v", err)
	}
	if s := order.GetOrder().GetStatus(); s != orderv1.OrderStatus_ORDER_STATUS_PAID {
		t.Fatalf("the order is %v, want PAID", s)
	}
	paid := payments(t, r, a)
	if len(paid) != 1 {
		t.Fatalf("the user has %d payments after one order, want 1", len(paid))
	}

	forged := uuid.NewString()
	_, err = r.Payments.CreatePayment(a.In(callCtx(t)), &paymentv1.CreatePaymentRequest{
		OrderId: forged, Amount: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 1}, PaymentMethodToken: "tok_approve",
		IdempotencyKey: "direct-create-" + suffix(),
	})
	wantCode(t, "CreatePayment with a user's token", err, codes.PermissionDenied)
	_, err = r.Payments.RefundPayment(a.In(callCtx(t)), &paymentv1.RefundPaymentRequest{
		PaymentId: paid[0].GetId(), Reason: "keeping the goods", IdempotencyKey: "direct-refund-" + suffix(),
	})
	wantCode(t, "RefundPayment with a user's token", err, codes.PermissionDenied)

	// Nothing was written: still the one payment, captured, with nothing refunded.
	after := payments(t, r, a)
	if len(after) != 1 {
		t.Fatalf("the user has %d payments after the attack, want 1: %v", len(after), after)
	}
	if p := after[0]; p.GetStatus() != paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED || p.GetRefundedAmount().GetMinorUnits() != 0 {
		t.Errorf("the order's payment is %v with %d refunded, want CAPTURED with nothing refunded", p.GetStatus(), p.GetRefundedAmount().GetMinorUnits())
	}
}

// payments lists every payment of the account, as the account sees them.
func payments(t *testing.T, r *loadkit.Rig, a loadkit.Account) []*paymentv1.Payment {
	t.Helper()
	var all []*paymentv1.Payment
	token := ""
	for {
		resp, err := r.Payments.ListPayments(a.In(callCtx(t)), &paymentv1.ListPaymentsRequest{PageSize: 500, PageToken: token})
		if err != nil {
			t.Fatalf("ListPayments: %v", err)
		}
		all = append(all, resp.GetPayments()...)
		if token = resp.GetNextPageToken(); token == "" {
			return all
		}
	}
}

// Attack: talk to a service port in plaintext, to read or inject traffic without TLS.
//
// Defence: every service port serves TLS only (pkg/server; `-insecure-plaintext` is the one way
// to serve plaintext, and the launcher never sets it). The call is the public health check, which
// the same client answers over TLS: a port that served plaintext would answer it and fail the test.
func TestPlaintextIsRefused(t *testing.T) {
	r := rig(t)
	bundle, err := identity.LoadBundle(r.PKI.TrustDomain(), r.PKI.BundleFile(), testkit.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range r.Instances {
		t.Run(in.Name, func(t *testing.T) {
			plain, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			_, err = healthpb.NewHealthClient(plain).Check(callCtx(t), &healthpb.HealthCheckRequest{})
			wantCode(t, "a plaintext health check", err, codes.Unavailable)

			// Over TLS the same call is answered: the refusal above is the plaintext's.
			cfg, err := identity.ClientConfig(nil, bundle, r.PKI.TrustDomain(), in.Service)
			if err != nil {
				t.Fatal(err)
			}
			tlsCC, err := grpc.NewClient(in.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				t.Fatal(err)
			}
			defer tlsCC.Close()
			if _, err := healthpb.NewHealthClient(tlsCC).Check(callCtx(t), &healthpb.HealthCheckRequest{}); err != nil {
				t.Errorf("the same health check over TLS: %v", err)
			}
		})
	}
}

// Attack: present a certificate naming the order service (spiffe://meshmart.local/service/order)
// issued by another CA, to call the payment service as the order service.
//
// Defence: the servers verify a presented client certificate against their trust bundle
// (identity.ServerConfig), so the handshake fails and no call is served. A server that read the
// peer's name without verifying the chain would serve the calls (as "order") and fail the test.
func TestClientCertificateFromAnotherCA(t *testing.T) {
	r := rig(t)
	td := r.PKI.TrustDomain()
	other, err := identity.OpenDevCA(t.TempDir(), td)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Issue("order"); err != nil {
		t.Fatal(err)
	}
	forged, err := identity.LoadFiles(filepath.Join(other.Dir("order"), identity.CertFile),
		filepath.Join(other.Dir("order"), identity.KeyFile), other.BundleFile(), testkit.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	genuine, err := identity.LoadFiles(filepath.Join(r.PKI.Dir("order"), identity.CertFile),
		filepath.Join(r.PKI.Dir("order"), identity.KeyFile), r.PKI.BundleFile(), testkit.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	victim := r.SignUp(t, "victim-"+suffix())
	// The attacker verifies the real payment service with the real bundle: only their own
	// certificate is forged.
	asOrder := func(t *testing.T, src identity.Source, addr string) paymentv1.PaymentServiceClient {
		return paymentClientAs(t, r, src, addr)
	}
	handled := func() float64 {
		var n float64
		for _, in := range r.Instances {
			if in.Service != "payment" {
				continue
			}
			for _, m := range []string{"ListPayments", "CreatePayment"} {
				v, err := loadkit.Handled(in.MetricsAddr, m)
				if err != nil {
					t.Fatal(err)
				}
				n += v
			}
		}
		return n
	}

	before := handled()
	for _, addr := range r.Addrs("payment") {
		c := asOrder(t, forged, addr)
		_, err := c.ListPayments(callCtx(t), &paymentv1.ListPaymentsRequest{UserId: victim.ID})
		wantCode(t, addr+": ListPayments with the other CA's order certificate", err, codes.Unavailable)
		_, err = c.CreatePayment(callCtx(t), &paymentv1.CreatePaymentRequest{
			OrderId: uuid.NewString(), Amount: &moneyv1.Money{CurrencyCode: "USD", MinorUnits: 100}, PaymentMethodToken: "tok_approve",
			IdempotencyKey: "forged-" + suffix(), UserId: victim.ID,
		})
		wantCode(t, addr+": CreatePayment with the other CA's order certificate", err, codes.Unavailable)
	}
	if after := handled(); after != before {
		t.Errorf("the payment replicas served %v ListPayments/CreatePayment calls during the attack, want 0", after-before)
	}

	// The real order certificate is served on the same call: the refusal is the CA's.
	if _, err := asOrder(t, genuine, r.Addrs("payment")[0]).ListPayments(callCtx(t), &paymentv1.ListPaymentsRequest{UserId: victim.ID}); err != nil {
		t.Errorf("ListPayments with the real order certificate: %v", err)
	}
}

// rogue is a payment service that an attacker runs: it answers every charge as captured, and
// records each call and each authorization header it is sent.
type rogue struct {
	paymentv1.UnimplementedPaymentServiceServer

	accepted atomic.Int64 // TCP connections
	mu       sync.Mutex
	calls    []string
	tokens   []string
}

var _ paymentv1.PaymentServiceServer = (*rogue)(nil)

func (g *rogue) CreatePayment(_ context.Context, req *paymentv1.CreatePaymentRequest) (*paymentv1.CreatePaymentResponse, error) {
	return &paymentv1.CreatePaymentResponse{Payment: &paymentv1.Payment{
		Id: uuid.NewString(), OrderId: req.GetOrderId(), UserId: req.GetUserId(), Amount: req.GetAmount(),
		Status: paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED,
	}}, nil
}

func (g *rogue) record(ctx context.Context, method string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.calls = append(g.calls, method)
	md, _ := metadata.FromIncomingContext(ctx)
	g.tokens = append(g.tokens, md.Get("authorization")...)
}

func (g *rogue) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	g.record(ctx, info.FullMethod)
	return h(ctx, req)
}

func (g *rogue) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	g.record(ss.Context(), info.FullMethod)
	return h(srv, ss)
}

func (g *rogue) seen() (calls, tokens int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.calls), len(g.tokens)
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// consulClient is a Consul API client of the platform's agent acting with token ("" is
// anonymous: nothing from the environment).
func consulClient(t *testing.T, r *loadkit.Rig, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token, cfg.TokenFile = r.ConsulAddr, token, ""
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Attack: someone with Consul's management token registers a rogue instance under `payment`,
// passing its check, serving TLS with a valid certificate of the real CA, but the user service's
// (stolen from a user replica), so as to receive the order service's charges and the users'
// tokens they carry, and to answer every charge as captured.
//
// Defence: the chassis client (pkg/client with identity.ClientConfig) calls only a server that
// proves to be the service it asked for, whatever Consul says; the rogue's handshakes fail, it is
// sent nothing, and the real replicas take every charge. A client accepting any certificate of
// the trust domain would send the rogue a share of the calls and fail this test.
func TestRoguePaymentInstanceGetsNothing(t *testing.T) {
	r := rig(t)
	userDir := r.PKI.Dir("user")
	stolen, err := identity.LoadFiles(filepath.Join(userDir, identity.CertFile), filepath.Join(userDir, identity.KeyFile),
		filepath.Join(userDir, identity.CAFile), testkit.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := identity.ServerConfig(stolen)
	if err != nil {
		t.Fatal(err)
	}
	g := &rogue{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.ChainUnaryInterceptor(g.unary), grpc.ChainStreamInterceptor(g.stream))
	paymentv1.RegisterPaymentServiceServer(srv, g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(countingListener{Listener: lis, n: &g.accepted}) }()
	t.Cleanup(srv.Stop)

	mgmt := consulClient(t, r, r.ACL.Management)
	const rogueID = "payment-rogue"
	port := lis.Addr().(*net.TCPAddr).Port
	if err := mgmt.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: rogueID, Name: "payment", Address: "127.0.0.1", Port: port,
		Check: &api.AgentServiceCheck{CheckID: rogueID + "-ttl", TTL: "10m", Status: api.HealthPassing},
	}); err != nil {
		t.Fatalf("register the rogue: %v", err)
	}
	t.Cleanup(func() { _ = mgmt.Agent().ServiceDeregister(rogueID) })
	rogueAddr := net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
	reader := consulClient(t, r, r.ACL.Reader.SecretID)
	testkit.Eventually(t, 10*time.Second, "the rogue passing in Consul", func() (bool, string) {
		addrs, err := consul.Passing(context.Background(), reader, "payment")
		return slices.Contains(addrs, rogueAddr), fmt.Sprint(addrs, err)
	})

	const workers = 4
	accounts := make([]loadkit.Account, workers)
	for w := range accounts {
		accounts[w] = r.SignUp(t, fmt.Sprintf("rogue-%d-%s", w, suffix()))
	}
	var (
		mu      sync.Mutex
		orders  = make([][]string, workers) // ids of each worker's orders
		notPaid []string
	)
	sfx := suffix()
	res := loadkit.Load(context.Background(), workers, 5*time.Second, 5*time.Second, nil, loadkit.Op{
		Name: "CreateOrder", Call: func(ctx context.Context, w, n int) error {
			resp, err := r.Orders.CreateOrder(accounts[w].In(ctx), loadkit.OrderRequest(fmt.Sprintf("rogue-%s-w%d-n%d", sfx, w, n)))
			if err != nil {
				return err
			}
			mu.Lock()
			defer mu.Unlock()
			orders[w] = append(orders[w], resp.GetOrder().GetId())
			if s := resp.GetOrder().GetStatus(); s != orderv1.OrderStatus_ORDER_STATUS_PAID {
				notPaid = append(notPaid, fmt.Sprintf("%s: %v", resp.GetOrder().GetId(), s))
			}
			return nil
		},
	})
	calls, tokens := g.seen()
	t.Logf("with a rogue payment instance passing in Consul (%d connections to it):\n%s", g.accepted.Load(), res)
	if o := res.Ops["CreateOrder"]; o.Calls == 0 || o.Errors > 0 {
		t.Errorf("CreateOrder: %d of %d calls failed (%v), want none of some", o.Errors, o.Calls, o.Codes)
	}
	if calls != 0 || tokens != 0 {
		t.Errorf("the rogue received %d calls and %d tokens, want none", calls, tokens)
	}
	if len(notPaid) > 0 {
		t.Errorf("%d orders are not PAID: %v", len(notPaid), notPaid[:min(len(notPaid), 10)])
	}
	// Each order was paid by the real payment service: its payment is there, captured.
	var unpaid []string
	for w, a := range accounts {
		captured := map[string]bool{}
		for _, p := range payments(t, r, a) {
			if p.GetStatus() == paymentv1.PaymentStatus_PAYMENT_STATUS_CAPTURED {
				captured[p.GetOrderId()] = true
			}
		}
		for _, id := range orders[w] {
			if !captured[id] {
				unpaid = append(unpaid, id)
			}
		}
	}
	if len(unpaid) > 0 {
		t.Errorf("%d orders have no captured payment in the payment service, such as %v", len(unpaid), unpaid[:min(len(unpaid), 5)])
	}
}

// Attack: with a service's own Consul token (the payment service's, taken from a payment replica),
// register a fake `user` instance, or deregister the real user instances.
//
// Defence: the Consul ACL (pkg/consul.ACL): default deny, and a service token may write only its
// own service. A service token with write on other services fails this test.
func TestServiceTokenCannotRegisterAnotherService(t *testing.T) {
	r := rig(t)
	asPayment := consulClient(t, r, r.ACL.Services["payment"].SecretID)
	err := asPayment.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "user-fake", Name: "user", Address: "127.0.0.1", Port: 1})
	wantForbidden(t, "register a fake user with the payment token", err)

	entries, _, err := consulClient(t, r, r.ACL.Reader.SecretID).Health().Service("user", "", true, nil)
	if err != nil || len(entries) == 0 {
		t.Fatalf("the reader lists %d user instances (%v), want some", len(entries), err)
	}
	for _, e := range entries {
		err := asPayment.Agent().ServiceDeregister(e.Service.ID)
		wantForbidden(t, "deregister "+e.Service.ID+" with the payment token", err)
	}
	if err := r.WaitPassing(context.Background(), 5*time.Second); err != nil {
		t.Errorf("after the attack: %v", err)
	}
}

func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	var se api.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Errorf("%s: %v, want 403 Permission denied", what, err)
	}
}

// Attack: an anonymous client of Consul (no token: any process that reaches the agent) lists the
// services to find their replicas, and registers an instance of its own.
//
// Defence: Consul's ACLs deny by default (pkg/consul.ACL.AgentConfig): the anonymous token sees no
// service and writes nothing. An agent with default_policy "allow" fails this test.
func TestAnonymousConsulSeesAndRegistersNothing(t *testing.T) {
	r := rig(t)
	anon := consulClient(t, r, "")
	reader := consulClient(t, r, r.ACL.Reader.SecretID)
	for _, svc := range platform.Services {
		if addrs, err := consul.Passing(context.Background(), reader, svc); err != nil || len(addrs) == 0 {
			t.Fatalf("the reader token sees %d %s instances (%v), want some", len(addrs), svc, err)
		}
		entries, _, err := anon.Health().Service(svc, "", false, nil)
		if err != nil {
			t.Errorf("anonymous health of %s: %v", svc, err)
		}
		if len(entries) != 0 {
			t.Errorf("an anonymous client sees %d %s instances, want none", len(entries), svc)
		}
	}
	services, _, err := anon.Catalog().Services(nil)
	if err != nil {
		t.Errorf("anonymous catalog: %v", err)
	}
	for _, svc := range platform.Services {
		if _, ok := services[svc]; ok {
			t.Errorf("an anonymous client's catalog names %s", svc)
		}
	}
	err = anon.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "payment-anon", Name: "payment", Address: "127.0.0.1", Port: 1})
	wantForbidden(t, "an anonymous registration", err)
}

// Attack: mint access tokens with a key of one's own, claiming to be an existing user and an
// admin; and, holding the real key, tokens of another issuer (a token minted by another system
// that shares the key must not pass for ours).
//
// Defence: every service verifies tokens against the keys the user service publishes
// (ListTokenKeys, pkg/tokenkeys) and checks the issuer and audience (pkg/auth.Verifier). Accepting a
// key that is not in the published set, or any issuer, fails this test. The same token signed by
// the real key as the real issuer is accepted: the refusals are the key's and the issuer's.
func TestForgedTokensAreUnauthenticated(t *testing.T) {
	r := rig(t)
	victim := r.SignUp(t, "forged-"+suffix())
	privPEM, _, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ownKey, err := auth.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	realKey, err := auth.LoadPrivateKey(filepath.Join(r.PKI.Dir("user"), auth.PrivateKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	mint := func(t *testing.T, key ed25519.PrivateKey, opts ...auth.Option) string {
		t.Helper()
		iss, err := auth.NewIssuer(key, time.Hour, opts...)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := iss.Issue(victim.ID, []string{auth.RoleUser, auth.RoleAdmin})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	calls := func(t *testing.T, token string, want codes.Code) {
		t.Helper()
		ctx := bearer(callCtx(t), token)
		_, err := r.Orders.ListOrders(ctx, &orderv1.ListOrdersRequest{})
		wantCode(t, "order ListOrders", err, want)
		_, err = r.Payments.ListPayments(ctx, &paymentv1.ListPaymentsRequest{})
		wantCode(t, "payment ListPayments", err, want)
		_, err = r.Users.GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: victim.ID}})
		wantCode(t, "user GetUser", err, want)
	}
	t.Run("unpublished key", func(t *testing.T) { calls(t, mint(t, ownKey), codes.Unauthenticated) })
	t.Run("another issuer", func(t *testing.T) { calls(t, mint(t, realKey, auth.WithIssuer("not-meshmart")), codes.Unauthenticated) })
	t.Run("another audience", func(t *testing.T) {
		calls(t, mint(t, realKey, auth.WithAudience("not-meshmart")), codes.Unauthenticated)
	})
	t.Run("control: the real key and issuer", func(t *testing.T) { calls(t, mint(t, realKey), codes.OK) })
}
