package grpcapi_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/user/internal/grpcapi"
	"github.com/meshmart/meshmart/services/user/internal/store"
	"github.com/meshmart/meshmart/services/user/internal/user"
)

// bareUsers answers GetUser and CreateUser from memory on a plain grpc-go server: no
// interceptors, no auth, no database, no password hashing. It is the baseline.
type bareUsers struct {
	userv1.UnimplementedUserServiceServer
	mu    sync.RWMutex
	users map[string]*userv1.User
}

func (b *bareUsers) GetUser(_ context.Context, req *userv1.GetUserRequest) (*userv1.GetUserResponse, error) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return &userv1.GetUserResponse{User: b.users[req.GetId()]}, nil
}

func (b *bareUsers) CreateUser(_ context.Context, req *userv1.CreateUserRequest) (*userv1.CreateUserResponse, error) {
	u := &userv1.User{Id: uuid.NewString(), Email: req.GetEmail(), Username: req.GetUsername(), GivenName: req.GetGivenName()}
	b.mu.Lock()
	b.users[u.GetId()] = u
	b.mu.Unlock()
	return &userv1.CreateUserResponse{User: u}, nil
}

// target is one server under load, with a client and a signed-in account to read.
type target struct {
	name   string
	client userv1.UserServiceClient
	ctx    context.Context // carries the token, if any
	id     string          // the account GetUser reads
}

// benchPKI gives the user service its identity: every server below serves TLS with the same
// certificate and identity.ServerConfig, and every client verifies it and presents none
// (identity.ClientConfig without an SVID), as a user's client does.
type benchPKI struct {
	testkit.PKI
	client credentials.TransportCredentials
}

func newBenchPKI(b *testing.B) benchPKI {
	pki := testkit.NewPKI(b, "user")
	tc, err := identity.ClientConfig(nil, pki.Identity("user"), testkit.TrustDomain(), "user")
	if err != nil {
		b.Fatal(err)
	}
	return benchPKI{PKI: pki, client: credentials.NewTLS(tc)}
}

func dial(b *testing.B, addr string, pki benchPKI) userv1.UserServiceClient {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(pki.client))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return userv1.NewUserServiceClient(cc)
}

func bareTarget(b *testing.B, pki benchPKI) target {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	tc, err := identity.ServerConfig(pki.Identity("user"))
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	bare := &bareUsers{users: map[string]*userv1.User{}}
	userv1.RegisterUserServiceServer(srv, bare)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	c := dial(b, lis.Addr().String(), pki)
	created, err := c.CreateUser(context.Background(), &userv1.CreateUserRequest{Email: "ada@example.com", Username: "ada", GivenName: "Ada"})
	if err != nil {
		b.Fatal(err)
	}
	return target{name: "bare grpc-go, memory", client: c, ctx: context.Background(), id: created.GetUser().GetId()}
}

func chassisTarget(b *testing.B, name, dsn string, pki benchPKI) target {
	keys := testkit.NewKeys(b)
	users, err := store.Open(context.Background(), dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { users.Close() })
	svc, err := user.NewService(users, keys.Issuer)
	if err != nil {
		b.Fatal(err)
	}
	api, err := grpcapi.New(svc, testkit.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	cfg := testkit.TestConfig()
	cfg.AuthPublicKey = keys.PublicKeyFile
	pki.Configure(&cfg, "user")
	srv, err := server.New("user", cfg, testkit.DiscardLogger())
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, api); err != nil {
		b.Fatal(err)
	}
	running := testkit.Serve(b, srv)
	c := dial(b, running.Addr, pki)
	created, err := c.CreateUser(context.Background(), &userv1.CreateUserRequest{Email: "ada@example.com", Username: "ada", Password: "correct horse", GivenName: "Ada"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+keys.Token(b, created.GetUser().GetId(), user.RoleUser))
	return target{name: name, client: c, ctx: ctx, id: created.GetUser().GetId()}
}

// BenchmarkUserService measures GetUser and CreateUser through the full chassis on SQLite and on
// PostgreSQL, and a bare grpc-go server answering the same requests from memory, all serving TLS
// with the same identity, in alternating rounds of one run so that machine noise hits every target
// alike. It prints a table of
// throughput, p50 and p99 and their ratios to the bare server. Run it with
//
//	make bench-user
func BenchmarkUserService(b *testing.B) {
	const (
		workers = 16
		rounds  = 3
		round   = time.Second
	)
	pki := newBenchPKI(b)
	targets := []target{
		bareTarget(b, pki),
		chassisTarget(b, "chassis + SQLite", testkit.SQLitePath(b), pki),
		chassisTarget(b, "chassis + PostgreSQL", testkit.PostgresURL(b), pki),
	}
	var seq atomic.Int64
	rpcs := []struct {
		name string
		call func(t target) error
	}{
		{"GetUser", func(t target) error {
			_, err := t.client.GetUser(t.ctx, &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: t.id}})
			return err
		}},
		{"CreateUser", func(t target) error {
			n := seq.Add(1)
			_, err := t.client.CreateUser(t.ctx, &userv1.CreateUserRequest{
				Email: fmt.Sprintf("u%d@example.com", n), Username: fmt.Sprintf("user%d", n), Password: "correct horse", GivenName: "U"})
			return err
		}},
	}
	for range b.N {
		w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(w, "rpc\ttarget\tcalls/s\tp50\tp99\terrors\tthroughput vs bare\tp50 vs bare\t\n")
		for _, rpc := range rpcs {
			results := make([]testkit.LoadResult, len(targets))
			for range rounds {
				for i, t := range targets {
					results[i].Add(testkit.Load(workers, round, func() error { return rpc.call(t) }))
				}
			}
			bare := results[0]
			for i, t := range targets {
				r := results[i]
				fmt.Fprintf(w, "%s\t%s\t%.0f\t%v\t%v\t%d\t%.3f\t%.1fx\t\n", rpc.name, t.name, r.Rate(),
					r.Percentile(0.50).Round(time.Microsecond), r.Percentile(0.99).Round(time.Microsecond), r.Errors,
					r.Rate()/bare.Rate(), float64(r.Percentile(0.50))/float64(bare.Percentile(0.50)))
				if r.Errors > 0 {
					b.Errorf("%s %s: %d errors", rpc.name, t.name, r.Errors)
				}
				b.ReportMetric(r.Rate(), rpc.name+"/"+shortName(i)+"_calls/s")
			}
		}
		w.Flush()
		fmt.Printf("(%d workers, %d alternating rounds of %v per target and rpc)\n", workers, rounds, round)
	}
}

func shortName(i int) string { return []string{"bare", "sqlite", "postgres"}[i] }
