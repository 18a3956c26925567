package identity_test

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/meshmart/meshmart/pkg/identity"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func td(t testing.TB) spiffeid.TrustDomain {
	t.Helper()
	return spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
}

// pki makes a development CA in a temporary directory with identities for services.
func pki(t testing.TB, services ...string) *identity.DevCA {
	t.Helper()
	ca, err := identity.OpenDevCA(filepath.Join(t.TempDir(), "pki"), td(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range services {
		if _, err := ca.Ensure(s); err != nil {
			t.Fatal(err)
		}
	}
	return ca
}

func files(t testing.TB, ca *identity.DevCA, service string) *identity.Files {
	t.Helper()
	dir := ca.Dir(service)
	f, err := identity.LoadFiles(filepath.Join(dir, identity.CertFile), filepath.Join(dir, identity.KeyFile), filepath.Join(dir, identity.CAFile), quiet)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// serve runs a health server holding src's identity and records the PeerService of each call
// and the serial number of the certificate it presented.
type served struct {
	addr string
	mu   sync.Mutex
	peer []string
}

func serve(t *testing.T, src identity.Source) *served {
	t.Helper()
	tc, err := identity.ServerConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	s := &served{}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.mu.Lock()
			s.peer = append(s.peer, identity.PeerService(ctx))
			s.mu.Unlock()
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	s.addr = lis.Addr().String()
	return s
}

func (s *served) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.peer) == 0 {
		return "<no call>"
	}
	return s.peer[len(s.peer)-1]
}

// call makes one health check over a new connection configured by tc and returns the serial
// number of the server's certificate.
func call(t *testing.T, addr string, tc *tls.Config) (string, error) {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(false), grpc.Peer(&p)); err != nil {
		return "", err
	}
	return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber.String(), nil
}

func TestMutualTLSNamesTheCallerAndChecksTheServer(t *testing.T) {
	ca := pki(t, "payment", "order", "user")
	srv := serve(t, files(t, ca, "payment"))
	order := files(t, ca, "order")

	tests := []struct {
		name     string
		svid     bool   // present order's SVID
		server   string // the service the client asks for
		wantErr  bool
		wantPeer string
	}{
		{name: "service dials service", svid: true, server: "payment", wantPeer: "order"},
		{name: "no client certificate is no service", svid: false, server: "payment", wantPeer: ""},
		{name: "server is not the service asked for", svid: true, server: "user", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tc *tls.Config
			var err error
			if tt.svid {
				tc, err = identity.ClientConfig(order, order, td(t), tt.server)
			} else {
				tc, err = identity.ClientConfig(nil, order, td(t), tt.server)
			}
			if err != nil {
				t.Fatal(err)
			}
			_, err = call(t, srv.addr, tc)
			if (err != nil) != tt.wantErr {
				t.Fatalf("call: %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && srv.last() != tt.wantPeer {
				t.Fatalf("server saw peer service %q, want %q", srv.last(), tt.wantPeer)
			}
		})
	}
}

func TestACertificateOfAnotherCAIsRefused(t *testing.T) {
	ours := pki(t, "payment")
	theirs := pki(t, "order") // same trust domain name, another CA: an attacker's
	srv := serve(t, files(t, ours, "payment"))
	srv.peer = nil
	intruder := files(t, theirs, "order")
	// The intruder trusts our CA, so that only its own certificate is at stake.
	bundle, err := identity.LoadBundle(td(t), ours.BundleFile(), quiet)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := identity.ClientConfig(intruder, bundle, td(t), "payment")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, srv.addr, tc); err == nil {
		t.Fatal("a client certificate of another CA was accepted")
	}
	if got := srv.last(); got != "<no call>" {
		t.Fatalf("a call got through as %q", got)
	}
}

func TestRotatedFilesArePresentedWithoutARestart(t *testing.T) {
	ca := pki(t, "payment", "order")
	srv := serve(t, files(t, ca, "payment"))
	order := files(t, ca, "order")
	tc, err := identity.ClientConfig(order, order, td(t), "payment")
	if err != nil {
		t.Fatal(err)
	}
	before, err := call(t, srv.addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Issue("payment"); err != nil {
		t.Fatal(err)
	}
	if err := ca.Issue("order"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		after, err := call(t, srv.addr, tc)
		if err != nil {
			t.Fatalf("call during rotation: %v", err)
		}
		if after != before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server still presents its old certificate 5s after rotation")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if srv.last() != "order" {
		t.Fatalf("peer after rotation = %q, want order", srv.last())
	}
}

func TestDevCAKeepsWhatIsValid(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := identity.OpenDevCA(dir, td(t))
	if err != nil {
		t.Fatal(err)
	}
	if created, err := ca.Ensure("user", "user-1"); err != nil || !created {
		t.Fatalf("first Ensure = %v, %v; want created", created, err)
	}
	again, err := identity.OpenDevCA(dir, td(t))
	if err != nil {
		t.Fatal(err)
	}
	if created, err := again.Ensure("user"); err != nil || created {
		t.Fatalf("second Ensure = %v, %v; want kept", created, err)
	}
	svid, err := files(t, again, "user").GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if got := svid.ID.String(); got != "spiffe://meshmart.local/service/user" {
		t.Fatalf("SPIFFE ID = %s", got)
	}
	if err := svid.Certificates[0].VerifyHostname("user-1"); err != nil {
		t.Fatalf("the extra host is not in the certificate: %v", err)
	}
}

func TestServiceName(t *testing.T) {
	for _, tt := range []struct {
		id, want string
		ok       bool
	}{
		{"spiffe://meshmart.local/service/order", "order", true},
		{"spiffe://meshmart.local/service/a/b", "", false},
		{"spiffe://meshmart.local/ns/default/sa/order", "", false},
	} {
		got, ok := identity.ServiceName(spiffeid.RequireFromString(tt.id))
		if got != tt.want || ok != tt.ok {
			t.Errorf("ServiceName(%s) = %q, %v; want %q, %v", tt.id, got, ok, tt.want, tt.ok)
		}
	}
}
