package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// The chassis' cost is measured on testkit's example GetUser, which does nothing, served by the
// chassis (every interceptor, a token to verify) and by a bare grpc-go server, each in a process
// of its own so that its CPU time (/proc/<pid>/stat) is its own and not the load generator's.
// The processes are this test binary again, started with serveEnv set: TestMain then serves
// instead of running tests.
const (
	serveEnv   = "MESHMART_BENCH_SERVE" // chassis or bare
	tlsEnv     = "MESHMART_BENCH_TLS"   // "cert,key,ca" of the server's identity; empty: plaintext
	authKeyEnv = "MESHMART_BENCH_AUTH_PUBLIC_KEY"
	// listeningPrefix starts the line on which a server process prints its address.
	listeningPrefix = "listening "
	// serverName is the service whose identity both servers hold; clientName is the identity
	// their clients present, as the order service calls the user service.
	serverName = "user"
	clientName = "order"
)

func TestMain(m *testing.M) {
	if kind := os.Getenv(serveEnv); kind != "" {
		if err := serveExample(kind); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveExample serves the example GetUser on a free loopback port, behind the chassis or bare,
// until SIGTERM.
func serveExample(kind string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := testkit.DiscardLogger()
	var tlsFiles []string
	if files := os.Getenv(tlsEnv); files != "" {
		if tlsFiles = strings.Split(files, ","); len(tlsFiles) != 3 {
			return fmt.Errorf("%s=%q: want cert,key,ca", tlsEnv, files)
		}
	}
	switch kind {
	case "chassis":
		cfg := testkit.TestConfig()
		cfg.AuthPublicKey = os.Getenv(authKeyEnv)
		// All the load comes from one address: the per-address limit (on by default since
		// issue 15) would refuse all but its burst, as the platform's rig turns it off too.
		cfg.AddressRateLimit = 0
		cfg.LogLevel = "warn"
		// The chassis logs through the logger it is given, at that logger's level: at warn, as
		// the platform's services run, the logging interceptor writes nothing for a call that
		// succeeds. (testkit.DiscardLogger is at info, so it would format a line per call.)
		warn, err := observability.NewLogger(io.Discard, cfg.LogLevel, cfg.LogFormat)
		if err != nil {
			return err
		}
		if tlsFiles != nil {
			// The chassis opens the files with identity.LoadFiles and serves
			// identity.ServerConfig, as the bare server below does.
			cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = tlsFiles[0], tlsFiles[1], tlsFiles[2]
			cfg.InsecurePlaintext = false
		}
		srv, err := server.New(serverName, cfg, warn)
		if err != nil {
			return err
		}
		if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("chassis")); err != nil {
			return err
		}
		addr, err := srv.Listen()
		if err != nil {
			return err
		}
		fmt.Println(listeningPrefix + addr.String())
		a := app.New(warn)
		a.Serve(srv)
		return a.Run(ctx)
	case "bare":
		var opts []grpc.ServerOption
		if tlsFiles != nil {
			src, err := identity.LoadFiles(tlsFiles[0], tlsFiles[1], tlsFiles[2], log)
			if err != nil {
				return err
			}
			tc, err := identity.ServerConfig(src)
			if err != nil {
				return err
			}
			opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		srv := grpc.NewServer(opts...)
		userv1.RegisterUserServiceServer(srv, testkit.NewExampleUsers("bare"))
		fmt.Println(listeningPrefix + lis.Addr().String())
		go func() { <-ctx.Done(); srv.GracefulStop() }()
		return srv.Serve(lis)
	}
	return fmt.Errorf("%s=%q: want chassis or bare", serveEnv, kind)
}

// exampleServer is a server process under load and a client of it.
type exampleServer struct {
	name   string
	pid    int
	client userv1.UserServiceClient
}

// exampleServers starts the four example servers, chassis and bare, plaintext and mutual TLS,
// and dials each. Both TLS servers hold the same identity (the user service's SVID, served with
// identity.ServerConfig) and their clients the same identity.ClientConfig (the order service's
// SVID, requiring the user service's): as services call each other.
func exampleServers(b *testing.B) (chassis, bare, chassisTLS, bareTLS exampleServer, token string) {
	keys := testkit.NewKeys(b)
	pki := testkit.NewPKI(b, serverName, clientName)
	cert, key, ca := pki.Files(serverName)
	as := pki.Identity(clientName)
	tc, err := identity.ClientConfig(as, as, testkit.TrustDomain(), serverName)
	if err != nil {
		b.Fatal(err)
	}
	bin, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	start := func(kind string, tlsFiles string, tc *tls.Config) exampleServer {
		name := kind
		creds := insecure.NewCredentials()
		if tc != nil {
			name += "-tls"
			creds = credentials.NewTLS(tc)
		}
		p := testkit.StartProcess(b, name, bin, []string{"-test.run=^$"},
			serveEnv+"="+kind, tlsEnv+"="+tlsFiles, authKeyEnv+"="+keys.PublicKeyFile)
		addr := waitListening(b, p)
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		return exampleServer{name: name, pid: p.Pid(), client: userv1.NewUserServiceClient(cc)}
	}
	files := strings.Join([]string{cert, key, ca}, ",")
	return start("chassis", "", nil), start("bare", "", nil), start("chassis", files, tc), start("bare", files, tc),
		keys.Token(b, uuid.NewString(), auth.RoleUser)
}

// waitListening returns the address a server process prints.
func waitListening(b *testing.B, p *testkit.Process) string {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		sc := bufio.NewScanner(strings.NewReader(p.Logs()))
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), listeningPrefix); ok {
				return addr
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("no %q line from the server process within 30s:\n%s", listeningPrefix, p.Logs())
	return ""
}

// serverStat is what alternating rounds against one example server measured, merged.
type serverStat struct {
	testkit.LoadResult
	cpu time.Duration // the server process's CPU time (user + system) during the rounds
}

// CPUPerCall is the server's CPU time per call.
func (s serverStat) CPUPerCall() time.Duration { return s.cpu / time.Duration(max(s.Calls, 1)) }

// alternateExample loads each server in turn with concurrency workers calling GetUser back to
// back for a round, rounds times, and measures the server process's CPU time over each round.
func alternateExample(b *testing.B, token string, servers ...exampleServer) []serverStat {
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
	req := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	stats := make([]serverStat, len(servers))
	for range rounds {
		for i, s := range servers {
			before := cpuTime(b, s.pid)
			res := testkit.Load(concurrency, round, func() error {
				callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				_, err := s.client.GetUser(callCtx, req)
				return err
			})
			stats[i].cpu += cpuTime(b, s.pid) - before
			stats[i].Add(res)
			if res.Errors > 0 {
				b.Errorf("GetUser on the %s example server: %d of %d calls failed", s.name, res.Errors, res.Calls)
			}
		}
	}
	return stats
}

// cpuTime is loadkit.CPUTime, failing the benchmark on an error. Its resolution is 10 ms, well
// under 1% of a round's CPU time.
func cpuTime(b *testing.B, pid int) time.Duration {
	d, err := loadkit.CPUTime(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// chassisRows measures the four example servers side by side and fills the chassis rows.
func chassisRows(b *testing.B, col *column) {
	chassis, bare, chassisTLS, bareTLS, token := exampleServers(b)
	s := alternateExample(b, token, chassis, bare, chassisTLS, bareTLS)
	pair := func(c, bare serverStat) string {
		return fmt.Sprintf("%.2f× the calls/s of bare grpc-go (%.0f vs %.0f); p50 %v vs %v; server CPU %v vs %v per call (%.2f×)",
			c.Rate()/bare.Rate(), c.Rate(), bare.Rate(), ms(c.Percentile(.5)), ms(bare.Percentile(.5)),
			us(c.CPUPerCall()), us(bare.CPUPerCall()), float64(c.CPUPerCall())/float64(bare.CPUPerCall()))
	}
	col.set("chassis", pair(s[0], s[1]))
	col.set("chassis TLS", pair(s[2], s[3]))
	tlsCost := func(withTLS, plain serverStat) string {
		return fmt.Sprintf("%.2f× the calls/s, %+.1fµs CPU per call", withTLS.Rate()/plain.Rate(),
			float64(withTLS.CPUPerCall()-plain.CPUPerCall())/float64(time.Microsecond))
	}
	col.set("TLS cost", "chassis: "+tlsCost(s[2], s[0])+"; bare: "+tlsCost(s[3], s[1]))
}

func us(d time.Duration) string { return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond)) }
