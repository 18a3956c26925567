// Package loadkit puts a platform started by tools/platform under load, for the benchmarks
// (tools/bench), the fault tests (tools/faults) and the security suite (tools/security): accounts and tokens, chassis clients that find
// the services through consul://, a count of the calls each instance was sent, a load loop that
// sorts every failure by status code, the instances' memory and their server-side call counts.
package loadkit

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/platform"
)

// Env are the settings every rig runs the services with: no rate limits, per client or per
// address (all the load comes from one client), a Consul health check every second (Consul's minimum) that times out after
// 500 ms, and a 1 s drain. The rig's administrator is the platform's (LogInAdmin).
var Env = []string{
	"MESHMART_RATE_LIMIT=0",
	"MESHMART_ADDRESS_RATE_LIMIT=0",
	"MESHMART_CHECK_INTERVAL=1s",
	"MESHMART_CHECK_TIMEOUT=500ms",
	"MESHMART_DRAIN_DELAY=1s",
	"MESHMART_LOG_LEVEL=warn",
}

// Options configure Start.
type Options struct {
	// Replicas of each service; default 3.
	Replicas int
	// Databases maps a service to its DATABASE_URL; a missing one is a SQLite file.
	Databases map[string]string
	// Env is added after the package's Env.
	Env []string
	// Gateway starts the REST gateway too (Platform.GatewayURL); the suites that load the
	// services directly leave it out.
	Gateway bool
}

// Rig is a running platform, on free ports, with chassis clients of its services.
type Rig struct {
	*platform.Platform

	Users    userv1.UserServiceClient
	Payments paymentv1.PaymentServiceClient
	Orders   orderv1.OrderServiceClient
	// Catalog is the order service's CatalogService, on the same connection as Orders.
	Catalog orderv1.CatalogServiceClient
	// Sent counts the calls sent to each instance, as the clients saw them.
	Sent *Sent
	// Log holds every process's output.
	Log *testkit.SyncBuffer

	dataDir string
	dbs     map[string]string
	conns   []*grpc.ClientConn
}

// Start builds and starts a platform for the test and dials its services through consul://;
// the test's end stops everything.
func Start(t testing.TB, opts Options) *Rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r, err := Launch(ctx, testkit.RepoRoot(t), t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.Close()
		if t.Failed() {
			t.Logf("platform output:\n%s", r.Log)
		}
	})
	return r
}

// Launch is Start for a platform that outlives any one test: the one a package's tests share,
// started in TestMain, where there is no testing.TB. It builds the services of the repository at
// root, keeps everything in dir (which the caller removes) and returns once every instance
// passes; the caller stops it with Close. On error nothing is left running, and the error holds
// the platform's output.
func Launch(ctx context.Context, root, dir string, opts Options) (_ *Rig, err error) {
	if opts.Replicas == 0 {
		opts.Replicas = 3
	}
	r := &Rig{Sent: &Sent{}, Log: &testkit.SyncBuffer{}, dataDir: filepath.Join(dir, "data"), dbs: opts.Databases}
	p, err := platform.Start(ctx, platform.Options{
		Root: root, BinDir: filepath.Join(dir, "bin"), DataDir: r.dataDir,
		Replicas: opts.Replicas, FreePorts: true, Databases: opts.Databases,
		Env: append(slices.Clone(Env), opts.Env...), Out: r.Log, WithoutGateway: !opts.Gateway,
	})
	if err != nil {
		return nil, fmt.Errorf("start the platform: %w\n%s", err, r.Log)
	}
	r.Platform = p
	defer func() {
		if err != nil {
			r.Close()
		}
	}()
	opts2, err := p.DialOptions()
	if err != nil {
		return nil, err
	}
	dial := func(svc string) (*grpc.ClientConn, error) {
		cc, err := client.Dial("consul://"+p.ConsulAddr+"/"+svc, testkit.DiscardLogger(),
			append(opts2, client.WithDialOptions(grpc.WithStatsHandler(r.Sent)))...)
		if err != nil {
			return nil, err
		}
		r.conns = append(r.conns, cc)
		return cc, nil
	}
	users, err := dial("user")
	if err != nil {
		return nil, err
	}
	payments, err := dial("payment")
	if err != nil {
		return nil, err
	}
	orders, err := dial("order")
	if err != nil {
		return nil, err
	}
	r.Users = userv1.NewUserServiceClient(users)
	r.Payments = paymentv1.NewPaymentServiceClient(payments)
	r.Orders = orderv1.NewOrderServiceClient(orders)
	r.Catalog = orderv1.NewCatalogServiceClient(orders)
	return r, nil
}

// Close closes the rig's clients and stops the platform (Platform.Stop). Start's rigs are closed
// at the test's end; Launch's by their caller.
func (r *Rig) Close() {
	for _, cc := range r.conns {
		cc.Close()
	}
	r.conns = nil
	r.Platform.Stop()
}

// DSN returns the database a service stores its data in.
func (r *Rig) DSN(service string) string {
	if dsn := r.dbs[service]; dsn != "" {
		return dsn
	}
	return filepath.Join(r.dataDir, service+".sqlite")
}

// Instance returns the instance called name (user-2, ...).
func (r *Rig) Instance(name string) *platform.Instance {
	for _, in := range r.Instances {
		if in.Name == name {
			return in
		}
	}
	panic("loadkit: no instance " + name)
}

// Account is a signed-up user.
type Account struct {
	ID string
	// Token is the access token Login issued; In sends a renewed one once it nears its expiry.
	Token string
	// Refresh is the refresh token Login issued (spent once In renewed the access token).
	Refresh string

	session *session
}

// In returns ctx carrying the account's access token. Access tokens live minutes, so In renews
// the token with RefreshToken once a third of its lifetime is left, as a real client does, and
// tests and loads may run longer than a token; an account made without SignUp or LogInAdmin (a
// bare Token) sends that token as it is. When a renewal fails (the account was deleted, its
// sessions ended) In keeps sending the last token, whose calls then fail as the client's would.
func (a Account) In(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+a.AccessToken())
}

// AccessToken is the access token In sends: Token, or the last one renewed from it.
func (a Account) AccessToken() string {
	if a.session != nil {
		return a.session.token()
	}
	return a.Token
}

// LoggedIn is the account a Login answered, renewing its token as SignUp's accounts do.
func (r *Rig) LoggedIn(login *userv1.LoginResponse) Account {
	return Account{ID: login.GetUser().GetId(), Token: login.GetAccessToken(), Refresh: login.GetRefreshToken(),
		session: newSession(r.Users, login)}
}

// session renews an account's access token. One renewal at a time: refresh tokens rotate, and
// two renewals with the same one would be a replay that ends the session.
type session struct {
	users userv1.UserServiceClient

	mu       sync.Mutex
	access   string
	refresh  string
	issued   time.Time
	expires  time.Time
	failedAt time.Time
}

func newSession(users userv1.UserServiceClient, login *userv1.LoginResponse) *session {
	return &session{users: users, access: login.GetAccessToken(), refresh: login.GetRefreshToken(), issued: time.Now(),
		expires: login.GetExpireTime().AsTime()}
}

// renewGap is how long a session waits after a failed renewal before it tries again.
const renewGap = time.Second

func (s *session) token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.refresh == "" || now.Before(s.expires.Add(-s.expires.Sub(s.issued)/3)) || now.Sub(s.failedAt) < renewGap {
		return s.access
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.users.RefreshToken(ctx, &userv1.RefreshTokenRequest{RefreshToken: s.refresh})
	if err != nil {
		s.failedAt = now
		return s.access
	}
	s.access, s.refresh, s.issued, s.expires = resp.GetAccessToken(), resp.GetRefreshToken(), now, resp.GetExpireTime().AsTime()
	return s.access
}

// Password is every rig account's password.
const Password = "correct horse battery"

// SignUp creates an account called name and logs it in.
func (r *Rig) SignUp(t testing.TB, name string) Account {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := r.Users.CreateUser(ctx, &userv1.CreateUserRequest{Email: name + "@example.com", Username: name, Password: Password, GivenName: name})
	if err != nil {
		t.Fatalf("sign up %s: %v", name, err)
	}
	login, err := r.Users.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Username{Username: name}, Password: Password})
	if err != nil {
		t.Fatalf("log %s in: %v", name, err)
	}
	return r.LoggedIn(login)
}

// LogInAdmin logs in as the platform's administrator (Platform.Admin, which the platform makes
// with `user admin` at start), for what only admins may do (ExportUsers).
func (r *Rig) LogInAdmin(t testing.TB) Account {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	login, err := r.Users.Login(ctx, &userv1.LoginRequest{Identifier: &userv1.LoginRequest_Email{Email: r.Admin.Email}, Password: r.Admin.Password})
	if err != nil {
		t.Fatalf("log the admin in: %v", err)
	}
	return r.LoggedIn(login)
}

// OrderRequest is the order every rig places: 2 BOOK-1 and 3 PEN-7 of the demo catalog
// (services/order/catalog.json, which the platform seeds), 2 × 19.99 + 3 × 2.50 USD priced by the
// server, paid by an approving card.
func OrderRequest(key string) *orderv1.CreateOrderRequest {
	return &orderv1.CreateOrderRequest{
		Items:              []*orderv1.LineItem{{Sku: "BOOK-1", Quantity: 2}, {Sku: "PEN-7", Quantity: 3}},
		PaymentMethodToken: "tok_approve", IdempotencyKey: key,
	}
}

// OrderTotal is OrderRequest's total in cents, at the demo catalog's prices.
const OrderTotal = 2*1999 + 3*250

// Sent is a gRPC client stats handler that counts the calls (every attempt, retries included)
// sent to each address, and when the last one was sent.
type Sent struct {
	mu    sync.Mutex
	count map[string]int
	last  map[string]time.Time
}

var _ stats.Handler = (*Sent)(nil)

func (s *Sent) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (s *Sent) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (s *Sent) HandleConn(context.Context, stats.ConnStats) {}

// HandleRPC records an attempt when its headers go out: by then it has picked its address.
func (s *Sent) HandleRPC(_ context.Context, st stats.RPCStats) {
	h, ok := st.(*stats.OutHeader)
	if !ok || !h.Client || h.RemoteAddr == nil {
		return
	}
	addr := h.RemoteAddr.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.count == nil {
		s.count, s.last = map[string]int{}, map[string]time.Time{}
	}
	s.count[addr]++
	s.last[addr] = time.Now()
}

// To returns how many calls were sent to addr, and when the last one was.
func (s *Sent) To(addr string) (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[addr], s.last[addr]
}

// Op is one kind of call in a load: Call makes the n-th call of a worker.
type Op struct {
	Name string
	Call func(ctx context.Context, worker, n int) error
}

// Failure is one failed call.
type Failure struct {
	At   time.Duration // since the load began
	Op   string
	Code codes.Code
	Msg  string
}

// OpResult is what a load measured of one Op; its Elapsed is the whole load's.
type OpResult struct {
	testkit.LoadResult
	Codes map[codes.Code]int // of the failed calls
}

// OnlyCodes reports whether every failure had one of the codes.
func (o *OpResult) OnlyCodes(allowed ...codes.Code) bool {
	for c := range o.Codes {
		if !slices.Contains(allowed, c) {
			return false
		}
	}
	return true
}

// Result is what a load measured.
type Result struct {
	Elapsed  time.Duration
	Ops      map[string]*OpResult
	Failures []Failure // in order
	order    []string
}

// String is a table: per op, calls, rate, failures by code and latency percentiles.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s %8s %8s %8s %8s %8s  %s\n", "op", "calls", "calls/s", "p50", "p99", "max", "failures")
	for _, name := range r.order {
		o := r.Ops[name]
		var fails []string
		for c, n := range o.Codes {
			fails = append(fails, fmt.Sprintf("%v×%d", c, n))
		}
		slices.Sort(fails)
		fmt.Fprintf(&b, "%-14s %8d %8.0f %8s %8s %8s  %s\n", name, o.Calls, o.Rate(),
			o.Percentile(0.5).Round(100*time.Microsecond), o.Percentile(0.99).Round(100*time.Microsecond),
			o.Percentile(1).Round(100*time.Microsecond), strings.Join(fails, " "))
	}
	return b.String()
}

// FailureWindow returns when the first and last failures happened, since the load began.
func (r *Result) FailureWindow() (first, last time.Duration) {
	if len(r.Failures) == 0 {
		return 0, 0
	}
	return r.Failures[0].At, r.Failures[len(r.Failures)-1].At
}

// WhenRefused makes call and, while the server refuses it with RESOURCE_EXHAUSTED and a
// RetryInfo (a refusal before anything was done: the user service sheds password hashes beyond
// what its cores can do), waits the delay it asks for and makes it again, within ctx: what a
// well-behaved client does. Any other answer, or a refusal without a delay, is returned as is.
func WhenRefused(ctx context.Context, call func() error) error {
	for {
		err := call()
		st := status.Convert(err)
		if st.Code() != codes.ResourceExhausted {
			return err
		}
		var delay time.Duration
		for _, d := range st.Details() {
			if ri, ok := d.(*errdetails.RetryInfo); ok {
				delay = ri.GetRetryDelay().AsDuration()
			}
		}
		if delay <= 0 {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

// failurePause is how long a worker waits after a failed call.
const failurePause = 50 * time.Millisecond

// Load runs workers goroutines for d (or until ctx ends); each makes the ops in turn, back to
// back, or at most at the shared rate when limit is not nil; after a failed call a worker pauses
// for 50 ms. Every call gets a timeout of its own. It is bounded in time and stops by itself.
func Load(ctx context.Context, workers int, d, timeout time.Duration, limit *rate.Limiter, ops ...Op) *Result {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	res := &Result{Ops: map[string]*OpResult{}}
	for _, op := range ops {
		res.Ops[op.Name] = &OpResult{Codes: map[codes.Code]int{}}
		res.order = append(res.order, op.Name)
	}
	var (
		mu    sync.Mutex
		wg    sync.WaitGroup
		start = time.Now()
	)
	for w := range workers {
		wg.Go(func() {
			for n := 0; ; n++ {
				if limit != nil && limit.Wait(ctx) != nil {
					return
				}
				if ctx.Err() != nil {
					return
				}
				op := ops[(w+n)%len(ops)]
				callCtx, cancel := context.WithTimeout(context.Background(), timeout)
				t0 := time.Now()
				err := op.Call(callCtx, w, n)
				took := time.Since(t0)
				cancel()
				mu.Lock()
				o := res.Ops[op.Name]
				o.Calls++
				o.Latencies = append(o.Latencies, took)
				if err != nil {
					st := status.Convert(err)
					o.Errors++
					o.Codes[st.Code()]++
					res.Failures = append(res.Failures, Failure{At: t0.Sub(start), Op: op.Name, Code: st.Code(), Msg: st.Message()})
				}
				mu.Unlock()
				if err != nil {
					// Back off, as a well-behaved caller does, rather than spin on fast failures
					// (an open circuit breaker answers at once).
					select {
					case <-ctx.Done():
					case <-time.After(failurePause):
					}
				}
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	for _, o := range res.Ops {
		o.Elapsed = res.Elapsed
	}
	slices.SortFunc(res.Failures, func(a, b Failure) int { return int(a.At - b.At) })
	return res
}

// RSS returns the resident set size of process pid (VmRSS in /proc/<pid>/status): its own
// memory and the pages of files it maps (its binary's above all), which the kernel shares with
// other processes mapping them and may reclaim at any time.
func RSS(pid int) (int64, error) { return procStatus(pid, "VmRSS") }

// PrivateRSS returns the resident memory that process pid alone holds (RssAnon in
// /proc/<pid>/status): its heap, stacks and other anonymous memory, which no other process
// shares and the kernel cannot drop without swap.
func PrivateRSS(pid int) (int64, error) { return procStatus(pid, "RssAnon") }

// procStatus reads field, a size in kB, from /proc/<pid>/status, in bytes.
func procStatus(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// Handled returns how many calls of method an instance has answered, from its /metrics.
func Handled(metricsAddr, method string) (float64, error) {
	return callCounter(metricsAddr, "grpc_server_handled_total", method)
}

// Open returns how many calls of method an instance has open (started and not yet answered): for
// streams, how many it holds.
func Open(metricsAddr, method string) (float64, error) {
	started, err := callCounter(metricsAddr, "grpc_server_started_total", method)
	if err != nil {
		return 0, err
	}
	handled, err := callCounter(metricsAddr, "grpc_server_handled_total", method)
	return started - handled, err
}

// callCounter sums a grpc_server_* counter of method over its labels, from an instance's
// /metrics.
func callCounter(metricsAddr, metric, method string) (float64, error) {
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	want := `grpc_method="` + method + `"`
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, metric+"{") || !strings.Contains(line, want) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		total += v
	}
	return total, sc.Err()
}
