package consul_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// startInstance runs an example instance registered in agent and waits until it passes.
func startInstance(t *testing.T, agent *testkit.Consul, instance string) *testkit.Running {
	t.Helper()
	cfg := testkit.TestConfig()
	cfg.ConsulAddr = agent.Addr
	cfg.HTTPAddr = "127.0.0.1:0" // its port is registered as metrics_port
	cfg.DrainDelay = 300 * time.Millisecond
	// The loops of these tests call as fast as they can, all from one address: on a fast enough
	// machine they would exceed the per-address limit, which is not what they test.
	cfg.AddressRateLimit = 0
	srv, err := server.New("example", cfg, testkit.Logger(t).With("instance", instance))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers(instance)); err != nil {
		t.Fatal(err)
	}
	running := testkit.Serve(t, srv)
	waitPassing(t, agent, func(addrs []string) bool { return slices.Contains(addrs, running.Addr) })
	return running
}

func waitPassing(t *testing.T, agent *testkit.Consul, ok func([]string) bool) {
	t.Helper()
	testkit.Eventually(t, 15*time.Second, "consul's passing instances", func() (bool, string) {
		addrs, err := agent.Passing(t.Context(), "example")
		return err == nil && ok(addrs), fmt.Sprintf("%v (err %v)", addrs, err)
	})
}

func dial(t *testing.T, agent *testkit.Consul, opts ...client.Option) userv1.UserServiceClient {
	t.Helper()
	cc, err := client.Dial("consul://"+agent.Addr+"/example", testkit.Logger(t), append([]client.Option{client.WithInsecure()}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return userv1.NewUserServiceClient(cc)
}

var get = &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}

// servedBy makes one GetUser call and returns the instance that answered it.
func servedBy(ctx context.Context, users userv1.UserServiceClient) (string, error) {
	var header metadata.MD
	if _, err := users.GetUser(ctx, get, grpc.Header(&header)); err != nil {
		return "", err
	}
	return strings.Join(header.Get(testkit.ServedByKey), ","), nil
}

// spread makes n calls from workers goroutines and counts the answers per instance.
func spread(t *testing.T, users userv1.UserServiceClient, n, workers int) map[string]int {
	t.Helper()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		wg     sync.WaitGroup
		errs   = make(chan error, n)
	)
	jobs := make(chan struct{}, n)
	for range n {
		jobs <- struct{}{}
	}
	close(jobs)
	for range workers {
		wg.Go(func() {
			for range jobs {
				who, err := servedBy(t.Context(), users)
				if err != nil {
					errs <- err
					continue
				}
				mu.Lock()
				counts[who]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("call failed: %v", err)
	}
	return counts
}

func TestRegistrationAndDeregistration(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	running := startInstance(t, agent, "a")

	services, err := agent.Client().Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for id, svc := range services {
		if svc.Service == "example" && strings.HasPrefix(id, "example-") && svc.Meta["version"] != "" && svc.Meta["metrics_port"] != "" {
			found = true
		}
	}
	checks, err := agent.Client().Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	var grpcCheck bool
	for _, c := range checks {
		if c.ServiceName == "example" && c.Type == "grpc" && c.Status == "passing" {
			grpcCheck = true
		}
	}
	if !found || !grpcCheck {
		t.Fatalf("registration: service found %v, passing gRPC check %v (services %v)", found, grpcCheck, services)
	}

	if err := running.Stop(); err != nil {
		t.Fatal(err)
	}
	services, err = agent.Client().Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 0 {
		t.Errorf("after shutdown the agent still has %v", services)
	}
}

func TestRoundRobinIsEven(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	for _, name := range []string{"a", "b", "c"} {
		startInstance(t, agent, name)
	}
	// Without hedging: it moves answers to whichever replica is quicker (a hedged read is counted
	// where its winner ran), and a replica a loaded machine stalls three times is skipped for a
	// second; that is what pkg/client's hedge tests check. Here the balancer's picks are counted.
	users := dial(t, agent, client.WithHedging(client.HedgeSettings{Disable: true}))
	// Wait until the client has connected to all three.
	testkit.Eventually(t, 10*time.Second, "instances reached", func() (bool, string) {
		c := spread(t, users, 30, 1)
		return len(c) == 3, fmt.Sprint(c)
	})

	const calls = 3000
	counts := spread(t, users, calls, 6)
	t.Logf("3,000 calls over 3 instances: %v", counts)
	for _, name := range []string{"a", "b", "c"} {
		if n := counts[name]; n < calls/3*95/100 || n > calls/3*105/100 {
			t.Errorf("instance %s answered %d calls, want 1000 ± 5%%", name, n)
		}
	}
}

func TestMembershipFollowsConsul(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	a := startInstance(t, agent, "a")
	startInstance(t, agent, "b")
	users := dial(t, agent)
	testkit.Eventually(t, 10*time.Second, "instances reached", func() (bool, string) {
		c := spread(t, users, 20, 1)
		return len(c) == 2, fmt.Sprint(c)
	})

	// A stopped instance leaves the rotation; the client is not restarted.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if c := spread(t, users, 50, 2); c["a"] != 0 || c["b"] != 50 {
		t.Errorf("after a stopped: %v, want every call on b", c)
	}

	// A new instance joins it.
	startInstance(t, agent, "c")
	testkit.Eventually(t, 10*time.Second, "the new instance joining", func() (bool, string) {
		c := spread(t, users, 20, 1)
		return c["c"] > 0 && c["b"] > 0, fmt.Sprint(c)
	})
}

func TestReregistersAfterAgentRestart(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	running := startInstance(t, agent, "a")
	agent.Stop()
	agent.Start() // a dev agent comes back empty
	waitPassing(t, agent, func(addrs []string) bool { return slices.Contains(addrs, running.Addr) })
}

func TestLastKnownAddressesWhileConsulIsDown(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	startInstance(t, agent, "a")
	startInstance(t, agent, "b")
	users := dial(t, agent)
	testkit.Eventually(t, 10*time.Second, "instances reached", func() (bool, string) {
		c := spread(t, users, 20, 1)
		return len(c) == 2, fmt.Sprint(c)
	})
	agent.Stop()
	// The resolver's watch fails and backs off; calls keep flowing to both instances.
	deadline := time.Now().Add(3 * time.Second)
	total := map[string]int{}
	for time.Now().Before(deadline) {
		for k, v := range spread(t, users, 20, 2) {
			total[k] += v
		}
	}
	if total["a"] == 0 || total["b"] == 0 {
		t.Errorf("with consul down: %v, want both instances still used", total)
	}
}

// TestRetriesHideAKilledInstance kills (SIGKILL) one of three instance processes under load:
// calls to an idempotent method see no error at all, and a non-idempotent method is never run
// twice, failing only with Unavailable.
func TestRetriesHideAKilledInstance(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	bin := filepath.Join(t.TempDir(), "exampleserver")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/meshmart/meshmart/pkg/testkit/exampleserver").CombinedOutput(); err != nil {
		t.Fatalf("build exampleserver: %v\n%s", err, out)
	}
	var procs []*process
	for i := range 3 {
		procs = append(procs, startProcess(t, bin, agent, "p"+strconv.Itoa(i)))
	}
	waitPassing(t, agent, func(addrs []string) bool { return len(addrs) == 3 })
	users := dial(t, agent)
	testkit.Eventually(t, 10*time.Second, "instances reached", func() (bool, string) {
		c := spread(t, users, 30, 1)
		return len(c) == 3, fmt.Sprint(c)
	})

	// Idempotent: GetUser under load while p0 dies.
	errs, calls := load(t, 8, 3*time.Second, time.Second, procs[0].kill, func(ctx context.Context, _ string) error {
		_, err := users.GetUser(ctx, get)
		return err
	})
	t.Logf("GetUser: %d calls, %d errors with p0 killed mid-load", calls, len(errs))
	for _, err := range errs {
		t.Errorf("GetUser failed: %v", err)
	}

	// Non-idempotent: CreateUser under load while p1 dies.
	var okIDs sync.Map
	errs, calls = load(t, 8, 2*time.Second, 700*time.Millisecond, procs[1].kill, func(ctx context.Context, id string) error {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-request-id", id)
		_, err := users.CreateUser(ctx, &userv1.CreateUserRequest{Email: "ada@example.com", Username: "ada", Password: "correct horse", GivenName: "Ada"})
		if err == nil {
			okIDs.Store(id, true)
		}
		return err
	})
	t.Logf("CreateUser: %d calls, %d errors with p1 killed mid-load", calls, len(errs))
	for _, err := range errs {
		if status.Code(err) != codes.Unavailable {
			t.Errorf("CreateUser failed with %v, want only Unavailable", err)
		}
	}
	seen := map[string]int{}
	for _, p := range procs {
		p.stop()
		for _, id := range p.created() {
			seen[id]++
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("CreateUser with request id %s ran %d times", id, n)
		}
	}
	okIDs.Range(func(id, _ any) bool {
		if seen[id.(string)] != 1 {
			t.Errorf("successful CreateUser %s was seen %d times by the servers", id, seen[id.(string)])
		}
		return true
	})
}

// load runs call from workers goroutines for d, running fault once after faultAt, and returns the
// errors and the number of calls. Each call gets a unique id.
func load(t *testing.T, workers int, d, faultAt time.Duration, fault func(), call func(ctx context.Context, id string) error) ([]error, int) {
	t.Helper()
	var (
		mu    sync.Mutex
		errs  []error
		calls int
		wg    sync.WaitGroup
	)
	stop := time.Now().Add(d)
	for w := range workers {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				err := call(ctx, fmt.Sprintf("w%d-%d", w, i))
				cancel()
				mu.Lock()
				calls++
				if err != nil {
					errs = append(errs, err)
				}
				mu.Unlock()
			}
		})
	}
	time.Sleep(faultAt)
	fault()
	wg.Wait()
	return errs, calls
}

// process is an exampleserver child process.
type process struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	copied chan struct{}
	done   chan struct{}
}

func startProcess(t *testing.T, bin string, agent *testkit.Consul, instance string) *process {
	t.Helper()
	cmd := exec.Command(bin, "-instance", instance, "-consul-addr", agent.Addr,
		"-grpc-addr", "127.0.0.1:0", "-http-addr", "",
		"-check-interval", "500ms", "-drain-delay", "0s", "-log-level", "warn", "-rate-limit", "0",
		"-create-latency", "30ms", "-insecure-plaintext")
	cmd.Env = os.Environ()
	cmd.Stderr = testWriter{t, instance}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, copied: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.copied)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), "created "); ok {
				p.mu.Lock()
				p.lines = append(p.lines, id)
				p.mu.Unlock()
			}
		}
	}()
	go func() { <-p.copied; _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)
	return p
}

func (p *process) kill() { _ = p.cmd.Process.Kill() }

// stop ends the process (gracefully) and waits until its output is read.
func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.kill()
		<-p.done
	}
}

func (p *process) created() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

type testWriter struct {
	t      *testing.T
	prefix string
}

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(w.prefix + ": " + strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
