package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// TestParsePorts reads docker ps' ports column as the stack's host-mode ports print it.
func TestParsePorts(t *testing.T) {
	t.Parallel()
	got := parsePorts("0.0.0.0:32768->50054/tcp, [::]:32768->50054/tcp, 0.0.0.0:32771->8080/tcp, [::]:32771->8080/tcp")
	if len(got) != 2 || got[50054] != 32768 || got[8080] != 32771 {
		t.Fatalf("parsePorts = %v, want 50054->32768 and 8080->32771", got)
	}
	if got := parsePorts(""); len(got) != 0 {
		t.Fatalf("parsePorts of nothing = %v", got)
	}
}

// TestSwarmFaults is the live fault test on the swarm stack (docs/swarm.md): under steady load
// sent only to ports the tasks publish on 127.0.0.1 — GetUser on the user tasks, and CreateOrder on
// the order tasks, which call user and payment through Consul — it rolls every service, kills one
// Consul server and then two, kills a service task, and rolls out an image whose health check
// fails, and prints what every step cost. It needs Docker: MESHMART_SWARM=1 runs it (.ci/platform
// does, after `make swarm-up`); it deploys the stack itself when it is not up (with the base images
// of MESHMART_SWARM_ENV_FILE), and then removes it and leaves swarm mode as it found it.
func TestSwarmFaults(t *testing.T) {
	if os.Getenv("MESHMART_SWARM") != "1" {
		t.Skip("the live swarm fault test: MESHMART_SWARM=1 runs it (Docker, about 8 minutes)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	s := &Stack{Root: root, Log: testWriter{t}}
	if f := os.Getenv("MESHMART_SWARM_ENV_FILE"); f != "" {
		if s.Env, err = ReadEnvFile(f); err != nil {
			t.Fatal(err)
		}
	}
	up, err := s.Deployed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !up {
		t.Cleanup(func() {
			if err := s.Down(context.Background()); err != nil {
				t.Errorf("swarm down: %v", err)
			}
		})
		if err := s.Up(ctx, true); err != nil {
			t.Fatal(err)
		}
	} else if err := s.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}

	users := dialTasks(ctx, t, s, "user")
	orders := dialTasks(ctx, t, s, "order")
	name := "swarm" + randomHex(4)
	signUpCtx, signUpCancel := context.WithTimeout(ctx, 30*time.Second)
	defer signUpCancel()
	if _, err := userv1.NewUserServiceClient(users).CreateUser(signUpCtx, &userv1.CreateUserRequest{
		Email: name + "@example.com", Username: name, Password: loadkit.Password, GivenName: name}); err != nil {
		t.Fatalf("sign up: %v", err)
	}
	login, err := userv1.NewUserServiceClient(users).Login(signUpCtx, &userv1.LoginRequest{
		Identifier: &userv1.LoginRequest_Username{Username: name}, Password: loadkit.Password})
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	// The rig's account renews its access token as a client does: the test outlives one.
	acct := (&loadkit.Rig{Users: userv1.NewUserServiceClient(users)}).LoggedIn(login)
	userClient, orderClient := userv1.NewUserServiceClient(users), orderv1.NewOrderServiceClient(orders)
	var orderN atomic.Int64
	ops := []loadkit.Op{
		{Name: "GetUser", Call: func(ctx context.Context, _, _ int) error {
			_, err := userClient.GetUser(acct.In(ctx), &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: acct.ID}})
			return err
		}},
		{Name: "CreateOrder", Call: func(ctx context.Context, _, _ int) error {
			key := fmt.Sprintf("%s-%d", name, orderN.Add(1))
			_, err := orderClient.CreateOrder(acct.In(ctx), loadkit.OrderRequest(key))
			return err
		}},
	}
	token, err := s.ReaderToken()
	if err != nil {
		t.Fatal(err)
	}

	var rows []row
	// under runs the load while fault does its work, and a few seconds after it returns.
	under := func(step string, fault func(ctx context.Context) (string, error)) *loadkit.Result {
		t.Helper()
		loadCtx, stopLoad := context.WithCancel(ctx)
		defer stopLoad()
		done := make(chan *loadkit.Result, 1)
		go func() {
			done <- loadkit.Load(loadCtx, 4, 8*time.Minute, 5*time.Second, rate.NewLimiter(40, 4), ops...)
		}()
		time.Sleep(2 * time.Second) // the load in its stride before the fault
		start := time.Now()
		note, err := fault(ctx)
		took := time.Since(start)
		time.Sleep(3 * time.Second)
		stopLoad()
		res := <-done
		t.Logf("%s (%s): %s\n%s", step, took.Round(100*time.Millisecond), note, res)
		rows = append(rows, row{step: step, took: took, note: note, res: res})
		if err != nil {
			t.Errorf("%s: %v", step, err)
		}
		return res
	}
	defer func() { printTable(t, rows) }()

	// 1. A rolling update of every service: start-first, health-gated, one task at a time. User,
	// payment and order one after another (rolling two that call each other at once made
	// CreateOrder fail: payment unreachable from order for ~40 s); the gateway, which no one in the
	// load calls, beside them, so that the test stays within its bound.
	res := under("rolling update of every service", func(ctx context.Context) (string, error) {
		update := func(svc string) (string, error) {
			t0 := time.Now()
			_, err := s.docker(ctx, "service", "update", "--force", "--detach=false", "--quiet", StackName+"_"+svc)
			return fmt.Sprintf("%s %s", svc, time.Since(t0).Round(time.Second)), err
		}
		var (
			gwNote string
			gwErr  error
			wg     sync.WaitGroup
		)
		wg.Go(func() { gwNote, gwErr = update("gateway") })
		var notes []string
		var errs []error
		for _, svc := range []string{"user", "payment", "order"} {
			note, err := update(svc)
			notes, errs = append(notes, note), append(errs, err)
		}
		wg.Wait()
		return strings.Join(append(notes, gwNote+" (beside them)"), ", "), errors.Join(append(errs, gwErr)...)
	})
	noFailures(t, res, "GetUser", "CreateOrder")
	waitPassing(ctx, t, s, token)

	// 2. One Consul server killed: the others keep a leader, nothing fails, it rejoins.
	res = under("one Consul server killed", func(ctx context.Context) (string, error) {
		watch := watchLeader(ctx, s, 1, 3)
		if err := killTask(ctx, s, "consul-2"); err != nil {
			return "", err
		}
		t0 := time.Now()
		err := s.until(ctx, 3*time.Minute, "consul-2 rejoins", func() (bool, error) {
			n, err := s.AliveMembers(ctx, s.ConsulAddr(2), token)
			return n == 3, err
		})
		// Killing the leader costs an election (Raft's timeouts: about a second or two); any
		// longer without a leader is a cluster that did not keep one.
		noLeader := watch()
		if gap := time.Duration(noLeader) * 250 * time.Millisecond / 2; gap > 10*time.Second && err == nil {
			err = fmt.Errorf("the surviving servers were without a leader for about %s", gap)
		}
		return fmt.Sprintf("rejoined (3 alive members) %s after the kill; without a leader for about %s (an election when the leader was killed)",
			time.Since(t0).Round(time.Second), time.Duration(noLeader)*250*time.Millisecond/2), err
	})
	noFailures(t, res, "GetUser", "CreateOrder")
	waitPassing(ctx, t, s, token)

	// 3. Two Consul servers killed: no quorum; reads keep working from what the balancers last
	// knew; what fails is printed.
	res = under("two Consul servers killed", func(ctx context.Context) (string, error) {
		if err := killTask(ctx, s, "consul-2"); err != nil {
			return "", err
		}
		if err := killTask(ctx, s, "consul-3"); err != nil {
			return "", err
		}
		t0 := time.Now()
		// First until consul-1 sees the loss (no leader, or fewer members alive), then until
		// the cluster is whole again.
		lost := s.until(ctx, time.Minute, "consul-1 sees two servers gone", func() (bool, error) {
			n, _ := s.AliveMembers(ctx, s.ConsulAddr(1), token)
			return n < 3, nil
		})
		if lost != nil {
			return "", lost
		}
		seen := time.Since(t0)
		err := s.until(ctx, 4*time.Minute, "consul-2 and consul-3 rejoin with a leader", func() (bool, error) {
			n, err := s.AliveMembers(ctx, s.ConsulAddr(1), token)
			return n == 3, err
		})
		return fmt.Sprintf("quorum lost (seen by consul-1) %s and back (leader, 3 alive members) %s after the kills",
			seen.Round(100*time.Millisecond), time.Since(t0).Round(time.Second)), err
	})
	noFailures(t, res, "GetUser")
	waitPassing(ctx, t, s, token)

	// 4. One service task killed: swarm replaces it and Consul lists the new one passing.
	res = under("one user task killed", func(ctx context.Context) (string, error) {
		if err := killTask(ctx, s, "user"); err != nil {
			return "", err
		}
		t0 := time.Now()
		err := s.until(ctx, 2*time.Minute, "swarm replaced the task and Consul lists it passing", func() (bool, error) {
			addrs, err := s.HealthyAddrs(ctx, "user", Services["user"])
			if err != nil || len(addrs) != 2 {
				return false, nil
			}
			n, err := s.Passing(ctx, s.ConsulAddr(1), token, "user")
			return n == 2, err
		})
		return fmt.Sprintf("replaced and passing in Consul %s after the kill", time.Since(t0).Round(time.Second)), err
	})
	noFailures(t, res, "GetUser")

	// 5. A bad rollout: an image whose health check cannot pass is rolled back by swarm itself.
	bad := "meshmart/user:swarm-bad-health"
	base := "meshmart/user:" + s.getenv("MESHMART_TAG", "dev")
	if err := buildBadImage(ctx, s, base, bad); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = s.docker(context.Background(), "image", "rm", bad) })
	res = under("bad rollout of user (health check fails)", func(ctx context.Context) (string, error) {
		if _, err := s.docker(ctx, "service", "update", "--detach", "--no-resolve-image", "--image", bad, StackName+"_user"); err != nil {
			return "", err
		}
		var state string
		err := s.until(ctx, 4*time.Minute, "swarm rolled the update back", func() (bool, error) {
			out, err := s.docker(ctx, "service", "inspect", "--format", "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}", StackName+"_user")
			state = strings.TrimSpace(out)
			if state == "paused" || state == "rollback_paused" {
				return false, fmt.Errorf("update status %s", state)
			}
			return state == "rollback_completed", err
		})
		if err != nil {
			return "update status " + state, err
		}
		img, err := s.docker(ctx, "service", "inspect", "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}", StackName+"_user")
		if strings.TrimSpace(img) != base && err == nil {
			err = fmt.Errorf("after the rollback the service runs %s, want %s", strings.TrimSpace(img), base)
		}
		return "update status " + state + ", image " + strings.TrimSpace(img), err
	})
	// Reads only: swarm stops each unhealthy new task, and a CreateOrder in flight on an order
	// task that was calling it can run out its deadline (printed above, as for the task kill).
	noFailures(t, res, "GetUser")
	waitPassing(ctx, t, s, token)
}

// row is one step's figures.
type row struct {
	step string
	took time.Duration
	note string
	res  *loadkit.Result
}

// printTable prints every step's calls, failures and p99 per op, as docs/faults.md shows them.
func printTable(t *testing.T, rows []row) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-42s %8s %18s %18s %9s %9s\n", "step", "took", "GetUser calls/fail", "CreateOrder c/f", "p99 get", "p99 order")
	for _, r := range rows {
		g, o := r.res.Ops["GetUser"], r.res.Ops["CreateOrder"]
		fmt.Fprintf(&b, "%-42s %8s %11d / %-4d %11d / %-4d %9s %9s\n", r.step, r.took.Round(time.Second),
			g.Calls, g.Errors, o.Calls, o.Errors,
			g.Percentile(0.99).Round(time.Millisecond), o.Percentile(0.99).Round(time.Millisecond))
	}
	for _, r := range rows {
		fmt.Fprintf(&b, "%s: %s\n", r.step, r.note)
	}
	t.Log(b.String())
}

// noFailures fails the test when any call of the named ops failed, listing the first failures.
func noFailures(t *testing.T, res *loadkit.Result, ops ...string) {
	t.Helper()
	for _, op := range ops {
		if o := res.Ops[op]; o.Errors > 0 {
			var first []string
			for _, f := range res.Failures {
				if f.Op == op && len(first) < 5 {
					first = append(first, fmt.Sprintf("%s %v %s", f.At.Round(time.Millisecond), f.Code, f.Msg))
				}
			}
			t.Errorf("%s: %d of %d calls failed: %s", op, o.Errors, o.Calls, strings.Join(first, "; "))
		}
	}
}

// waitPassing waits until Consul lists every instance passing again, so that each step starts
// from a whole stack.
func waitPassing(ctx context.Context, t *testing.T, s *Stack, token string) {
	t.Helper()
	err := s.until(ctx, 2*time.Minute, "every instance passing", func() (bool, error) {
		if n, err := s.AliveMembers(ctx, s.ConsulAddr(1), token); err != nil || n != 3 {
			return false, err
		}
		for svc := range Services {
			if n, err := s.Passing(ctx, s.ConsulAddr(1), token, svc); err != nil || n != 2 {
				return false, err
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// killTask kills the first running container of one of the stack's services, as a crash would
// (SIGKILL: no deregistration, no drain).
func killTask(ctx context.Context, s *Stack, service string) error {
	tasks, err := s.Tasks(ctx, service)
	if err != nil {
		return err
	}
	if len(tasks) == 0 {
		return fmt.Errorf("no running task of %s", service)
	}
	_, err = s.docker(ctx, "kill", tasks[0].ID)
	return err
}

// watchLeader asks the Consul servers numbered in servers for their leader four times a second
// until the returned function is called, which returns how many answers named none.
func watchLeader(ctx context.Context, s *Stack, servers ...int) func() int {
	ctx, cancel := context.WithCancel(ctx)
	var none atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			for _, n := range servers {
				if l, err := s.Leader(ctx, s.ConsulAddr(n)); (err != nil || l == "") && ctx.Err() == nil {
					none.Add(1)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
		}
	})
	return func() int {
		cancel()
		wg.Wait()
		return int(none.Load())
	}
}

// buildBadImage builds tag from base with a health check that cannot pass (the probe asks a port
// nothing listens on), with the classic builder.
func buildBadImage(ctx context.Context, s *Stack, base, tag string) error {
	cmd := exec.CommandContext(ctx, "docker", "build", "--quiet", "-t", tag, "-")
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	cmd.Stdin = strings.NewReader("FROM " + base + "\n" +
		`HEALTHCHECK --interval=2s --timeout=2s --start-period=2s --retries=2 CMD ["/service", "healthcheck", "-grpc-addr", "127.0.0.1:1"]` + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker build %s: %w: %s", tag, err, out)
	}
	return nil
}

// dialTasks dials one of the stack's services the way a client outside the overlay does: round
// robin over its healthy tasks' published ports, which a resolver re-reads from Docker twice a
// second (tasks come and go with updates), verifying the service's SPIFFE identity.
func dialTasks(ctx context.Context, t *testing.T, s *Stack, service string) *grpc.ClientConn {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(identity.DefaultTrustDomain)
	bundle, err := identity.LoadBundle(td, filepath.Join(s.PublicDir(), "ca.pem"), testkit.DiscardLogger())
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := s.HealthyAddrs(ctx, service, Services[service])
	if err != nil {
		t.Fatal(err)
	}
	r := manual.NewBuilderWithScheme("swarm-" + service)
	r.InitialState(state(addrs))
	watchCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		last := addrs
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-time.After(500 * time.Millisecond):
			}
			now, err := s.HealthyAddrs(watchCtx, service, Services[service])
			if err != nil || slices.Equal(now, last) {
				continue
			}
			last = now
			r.UpdateState(state(now))
		}
	})
	cc, err := client.Dial("swarm-"+service+":///"+service, testkit.DiscardLogger(),
		client.WithTrustBundle(bundle, td), client.WithServer(service), client.WithDialOptions(grpc.WithResolvers(r)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		wg.Wait()
		cc.Close()
	})
	return cc
}

func state(addrs []string) resolver.State {
	var st resolver.State
	for _, a := range addrs {
		st.Addresses = append(st.Addresses, resolver.Address{Addr: a})
	}
	return st
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// testWriter sends the stack's progress lines to the test's log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
