package faults

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
	"github.com/meshmart/meshmart/tools/platform"
)

// Re-issuing every service's certificate (a new key each) under load costs no call: every
// instance presents its new certificate from its next handshake on, with no restart (identity.Files
// rechecks its files at most once a second, on handshakes), while the connections already open go
// on. Then one payment and one user replica are restarted, so that the order replicas, still
// running since before the rotation, open new mutual-TLS connections presenting their own
// reloaded certificates: the orders placed afterwards are paid through them.
func TestCertificateRotationUnderLoad(t *testing.T) {
	r := loadkit.Start(t, loadkit.Options{})
	m := newMix(t, r, "certs", workers)
	before := map[string]string{}
	for _, in := range r.Instances {
		cert, err := presented(t, r, in)
		if err != nil {
			t.Fatalf("%s: %v", in.Name, err)
		}
		before[in.Name] = cert.SerialNumber.String()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var (
		rotErr                              error
		rotatedAt, presentedAt, restartedAt time.Duration
		rotated                             atomic.Bool  // every instance presents its new certificate
		paidAfter                           atomic.Int64 // orders placed in calls begun after that
		newCerts                            = map[string]*x509.Certificate{}
		restarted                           = []string{"payment-1", "user-1"}
		took                                = map[string]time.Duration{} // from the rotation to each instance's new certificate
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		time.Sleep(3 * time.Second)
		rotatedAt = time.Since(start)
		for _, svc := range platform.Services {
			if rotErr = r.PKI.Issue(svc); rotErr != nil {
				return
			}
			if newCerts[svc], rotErr = readCert(filepath.Join(r.PKI.Dir(svc), identity.CertFile)); rotErr != nil {
				return
			}
		}
		// Every instance presents its service's new certificate to a new connection, within the
		// once-a-second recheck (and a margin).
		deadline := time.Now().Add(10 * time.Second)
		for _, in := range r.Instances {
			for {
				cert, err := presented(t, r, in)
				if err == nil && cert.Equal(newCerts[in.Service]) {
					took[in.Name] = time.Since(start) - rotatedAt
					break
				}
				if time.Now().After(deadline) {
					rotErr = fmt.Errorf("%s still presents the old certificate 10s after the rotation (last error: %v)", in.Name, err)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		presentedAt = time.Since(start)
		rotated.Store(true)
		for _, name := range restarted {
			if rotErr = r.Restart(r.Instance(name)); rotErr != nil {
				return
			}
			if rotErr = r.WaitPassing(ctx, 30*time.Second); rotErr != nil {
				return
			}
		}
		restartedAt = time.Since(start)
		time.Sleep(3 * time.Second)
	}()
	// Sign-ups are left out: they hash a password (argon2id), and on a busy 2-core machine their
	// latency nears the 2 s deadline whatever the certificates do.
	ops := m.ops("CreateUser")
	for i, op := range ops {
		if op.Name == "CreateOrder" {
			call := op.Call
			ops[i].Call = func(ctx context.Context, w, n int) error {
				began := rotated.Load()
				err := call(ctx, w, n)
				if began && err == nil {
					paidAfter.Add(1)
				}
				return err
			}
		}
	}
	res := loadkit.Load(ctx, workers, time.Minute, callTimeout, nil, ops...)
	<-done
	if rotErr != nil {
		t.Fatalf("rotation: %v", rotErr)
	}
	var slowest time.Duration
	for _, d := range took {
		slowest = max(slowest, d)
	}
	t.Logf("certificates of %v re-issued %v into the load; all %d instances presented the new ones to new connections %v later (the slowest instance %v after the rotation); %v restarted from %v to %v; the load lasted %v:\n%s",
		platform.Services, rotatedAt.Round(time.Millisecond), len(r.Instances), (presentedAt - rotatedAt).Round(time.Millisecond),
		slowest.Round(time.Millisecond), restarted, presentedAt.Round(time.Millisecond), restartedAt.Round(time.Millisecond), res.Elapsed.Round(time.Millisecond), res)
	for _, in := range r.Instances {
		if now := newCerts[in.Service].SerialNumber.String(); now == before[in.Name] {
			t.Errorf("%s: the new certificate has the old one's serial %s", in.Name, now)
		}
	}
	noErrors(t, res, "GetUser", "CreateOrder", "ListPayments")
	logFailures(t, res)

	// The restarted payment replica was sent CreatePayment, which only the order service may
	// call: by order replicas over connections opened after the rotation, with their reloaded
	// client certificates.
	charged, err := loadkit.Handled(r.Instance("payment-1").MetricsAddr, "CreatePayment")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after the rotation: %d orders placed and paid; payment-1, restarted, answered %.0f CreatePayment calls from the order replicas", paidAfter.Load(), charged)
	if paidAfter.Load() == 0 {
		t.Error("no order was placed after the rotation: the test proves nothing")
	}
	if charged == 0 {
		t.Error("the restarted payment-1 was sent no CreatePayment: no new order→payment connection was proved")
	}
	m.checkOrders(t)
}

// Rotating the token-signing key under load, by the documented procedure
// (services/user/README.md, "Rotating the signing key"), refuses no token and fails no call,
// while the load keeps logging in (taking fresh tokens) and calling every service with them:
//  1. K2 is published beside K1 (a rolling restart of the user replicas with -extra-keys K2),
//     and every payment and order replica fetches it (their refresh is 1 s here);
//  2. the user replicas sign with K2, K1 still published (a second rolling restart): new tokens
//     name K2, and K1's tokens still verify everywhere;
//  3. with the load stopped, K1 is dropped: within a refresh its tokens are refused everywhere.
func TestSigningKeyRotationUnderLoad(t *testing.T) {
	const refresh = time.Second
	r := loadkit.Start(t, loadkit.Options{Env: []string{"MESHMART_AUTH_KEYS_REFRESH=" + refresh.String()}})
	m := newMix(t, r, "keys", workers)
	users := instancesOf(r, "user")

	k1Path, ok := users[0].Env("MESHMART_SIGNING_KEY")
	if !ok {
		t.Fatal("the user replicas are given no MESHMART_SIGNING_KEY")
	}
	k1Key, err := auth.LoadPrivateKey(k1Path)
	if err != nil {
		t.Fatal(err)
	}
	k1 := auth.KeyID(k1Key.Public().(ed25519.PublicKey))
	// K2 beside K1, in the user service's secrets directory.
	privPEM, _, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k2Path := filepath.Join(filepath.Dir(k1Path), "auth-next.key.pem")
	if err := os.WriteFile(k2Path, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	k2Key, err := auth.ParsePrivateKey(privPEM)
	if err != nil {
		t.Fatal(err)
	}
	k2 := auth.KeyID(k2Key.Public().(ed25519.PublicKey))
	k2Issuer, err := auth.NewIssuer(k2Key, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	probe, _, err := k2Issuer.Issue("rotation-probe", []string{auth.RoleUser})
	if err != nil {
		t.Fatal(err)
	}
	old := m.account(0) // signed up, and so logged in, before the rotation: a K1 token
	if kid := kidOf(old.Token); kid != k1 {
		t.Fatalf("a token before the rotation names key %q, want K1 %q", kid, k1)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	var (
		rotErr                   error
		published, held, signing time.Duration
		probesRefused            int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cancel()
		time.Sleep(2 * time.Second)
		// 1. Publish K2 (still signing with K1), replica by replica.
		if rotErr = roll(ctx, r, users, "MESHMART_EXTRA_KEYS="+k2Path); rotErr != nil {
			return
		}
		published = time.Since(start)
		// Wait for a refresh (and one more), then prove that every payment and order replica
		// holds K2: a token K2 signed verifies on each. (A refusal would make it fetch at once,
		// so a probe refused first is counted.)
		time.Sleep(2 * refresh)
		if probesRefused, rotErr = untilAccepted(ctx, t, r, probe, 10*time.Second); rotErr != nil {
			return
		}
		held = time.Since(start)
		// 2. Sign with K2, K1 still published, replica by replica.
		if rotErr = roll(ctx, r, users, "MESHMART_SIGNING_KEY="+k2Path, "MESHMART_EXTRA_KEYS="+k1Path); rotErr != nil {
			return
		}
		signing = time.Since(start)
		time.Sleep(3 * time.Second) // K2's tokens under load
	}()
	// Logins hash a password (argon2id) as sign-ups do: the load leaves sign-ups out and keeps
	// to a steady rate, so that the machine's CPU, not the rotation, never decides a call's fate.
	const perSecond = 40
	res := loadkit.Load(ctx, workers, 2*time.Minute, callTimeout, rate.NewLimiter(perSecond, 1), append(m.ops("CreateUser"), m.login())...)
	<-done
	if rotErr != nil {
		t.Fatalf("rotation: %v", rotErr)
	}
	m.tokens.RLock()
	k1Logins, k2Logins := m.logins[k1], m.logins[k2]
	m.tokens.RUnlock()
	t.Logf("K2 published by every user replica %v into the load, held by every payment and order replica at %v (%d of %d first probes refused), signing on every user replica at %v; the load (%d calls/s) lasted %v; logins during it: %d tokens of K1, %d of K2:\n%s",
		published.Round(time.Millisecond), held.Round(time.Millisecond), probesRefused, len(r.Instances)-len(users),
		signing.Round(time.Millisecond), perSecond, res.Elapsed.Round(time.Millisecond), k1Logins, k2Logins, res)
	noErrors(t, res, "GetUser", "CreateOrder", "ListPayments", "Login")
	logFailures(t, res)
	if k1Logins == 0 || k2Logins == 0 {
		t.Errorf("the load logged in %d times with K1 and %d with K2, want both: it proves nothing", k1Logins, k2Logins)
	}

	// New tokens name K2; K1's still verify on every instance of every service.
	for w := range m.accounts {
		if err := m.login().Call(t.Context(), w, 0); err != nil {
			t.Fatalf("log in after the rotation: %v", err)
		}
		if kid := kidOf(m.account(w).Token); kid != k2 {
			t.Errorf("a token issued after the rotation names key %q, want K2 %q", kid, k2)
		}
	}
	for _, in := range r.Instances {
		if err := callAs(t, r, in, old); err != nil {
			t.Errorf("%s refused a K1 token after the rotation: %v", in.Name, err)
		}
	}
	m.checkOrders(t)

	// 3. Drop K1 (once its tokens expired, in production): within a refresh it is refused
	// everywhere, and K2's tokens still verify.
	dropped := time.Now()
	if err := roll(t.Context(), r, users, "MESHMART_EXTRA_KEYS="); err != nil {
		t.Fatalf("drop K1: %v", err)
	}
	rolled := time.Since(dropped)
	deadline := time.Now().Add(10 * time.Second)
	for _, in := range r.Instances {
		for {
			err := callAs(t, r, in, old)
			if status.Code(err) == codes.Unauthenticated {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: a K1 token after K1 was dropped: %v, want Unauthenticated", in.Name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := callAs(t, r, in, m.account(0)); err != nil {
			t.Errorf("%s refused a K2 token once K1 was dropped: %v", in.Name, err)
		}
	}
	t.Logf("K1 dropped: the user replicas restarted in %v; a K1 token refused (Unauthenticated) by all %d instances %v after the last restart; K2's tokens verify",
		rolled.Round(time.Millisecond), len(r.Instances), (time.Since(dropped) - rolled).Round(time.Millisecond))
}

// roll restarts ins one by one with env (platform.RestartWith), each once the one before passes
// its health check in Consul again, so that the service always has replicas serving.
func roll(ctx context.Context, r *loadkit.Rig, ins []*platform.Instance, env ...string) error {
	for _, in := range ins {
		if err := r.RestartWith(in, env...); err != nil {
			return err
		}
		if err := r.WaitPassing(ctx, 30*time.Second); err != nil {
			return fmt.Errorf("after restarting %s: %w", in.Name, err)
		}
	}
	return nil
}

// untilAccepted calls every payment and order instance with token until each accepts it, and
// returns how many refused it first.
func untilAccepted(ctx context.Context, t *testing.T, r *loadkit.Rig, token string, within time.Duration) (refused int, err error) {
	deadline := time.Now().Add(within)
	for _, in := range r.Instances {
		if in.Service == "user" {
			continue
		}
		for first := true; ; first = false {
			err := callAs(t, r, in, loadkit.Account{Token: token})
			if err == nil {
				break
			}
			if first {
				refused++
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return refused, fmt.Errorf("%s still refuses a K2 token %v after K2 was published: %w", in.Name, within, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return refused, nil
}

func instancesOf(r *loadkit.Rig, service string) []*platform.Instance {
	var ins []*platform.Instance
	for _, in := range r.Instances {
		if in.Service == service {
			ins = append(ins, in)
		}
	}
	return ins
}

// dialInstance dials one instance directly, on a connection of its own, as a user's client does
// (TLS, verifying that it is the service it should be, presenting no certificate).
func dialInstance(t *testing.T, r *loadkit.Rig, in *platform.Instance) *grpc.ClientConn {
	t.Helper()
	opts, err := r.DialOptions()
	if err != nil {
		t.Fatal(err)
	}
	cc, err := client.Dial(in.Addr, testkit.DiscardLogger(), append(opts, client.WithServer(in.Service))...)
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// presented returns the certificate the instance in presents to a new connection.
func presented(t *testing.T, r *loadkit.Rig, in *platform.Instance) (*x509.Certificate, error) {
	cc := dialInstance(t, r, in)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil, fmt.Errorf("no TLS peer certificate (auth info %T)", p.AuthInfo)
	}
	return info.State.PeerCertificates[0], nil
}

// callAs makes a call that needs a signed-in user on one instance, directly, with a's token:
// GetUser of a's account on the user service, ListPayments and ListOrders on the others.
func callAs(t *testing.T, r *loadkit.Rig, in *platform.Instance, a loadkit.Account) error {
	cc := dialInstance(t, r, in)
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.Token)
	var err error
	switch in.Service {
	case "user":
		_, err = userv1.NewUserServiceClient(cc).GetUser(ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: a.ID}})
	case "payment":
		_, err = paymentv1.NewPaymentServiceClient(cc).ListPayments(ctx, &paymentv1.ListPaymentsRequest{PageSize: 1})
	case "order":
		_, err = orderv1.NewOrderServiceClient(cc).ListOrders(ctx, &orderv1.ListOrdersRequest{PageSize: 1})
	default:
		err = fmt.Errorf("no call for service %s", in.Service)
	}
	return err
}

func readCert(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New(path + ": no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// kidOf returns the key id a token's header names, "" for a token it cannot read.
func kidOf(token string) string {
	header, _, _ := strings.Cut(token, ".")
	b, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return ""
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if json.NewDecoder(bytes.NewReader(b)).Decode(&h) != nil {
		return ""
	}
	return h.Kid
}
