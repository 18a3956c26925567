package app_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// registered lists the instances of service the agent knows, passing or not.
func registered(t *testing.T, agent *testkit.Consul, service string) []string {
	t.Helper()
	entries, _, err := agent.Client().Health().Service(service, "", false, (&api.QueryOptions{}).WithContext(t.Context()))
	if err != nil {
		t.Fatalf("consul: %v", err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.Service.ID)
	}
	return ids
}

// TestDrainCommand drains a real service process registered in a real Consul agent with the
// drain subcommand, as a Kubernetes preStop hook does: the instance leaves Consul and stays out
// (the registrar does not put it back), reports NOT_SERVING on both ports, still answers calls,
// and the SIGTERM that follows stops it without a second drain delay.
func TestDrainCommand(t *testing.T) {
	t.Parallel()
	bin := testkit.BuildBinary(t, "github.com/meshmart/meshmart/pkg/testkit/exampleserver")
	agent := testkit.StartConsul(t)
	pki := testkit.NewPKI(t, "example")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	healthAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	const drainDelay = 2 * time.Second
	p := testkit.StartProcess(t, "exampleserver", bin, []string{"-grpc-addr", addr, "-health-addr", healthAddr,
		"-http-addr", "", "-consul-addr", agent.Addr, "-check-interval", "200ms", "-drain-delay", drainDelay.String()},
		pki.Env("example")...)
	testkit.Eventually(t, 15*time.Second, "the instance passing in Consul", func() (bool, string) {
		got, err := agent.Passing(t.Context(), "example")
		return err == nil && len(got) == 1, strings.Join(got, ",")
	})

	// The chassis client checks health itself (healthCheckConfig) and so leaves a drained
	// instance at once; this one does not, as a caller that has not noticed yet.
	cc, err := client.Dial(addr, testkit.Logger(t), pki.As("example"), client.WithServer("example"),
		client.WithDialOptions(grpc.WithDisableHealthCheck()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	users, h := userv1.NewUserServiceClient(cc), healthpb.NewHealthClient(cc)
	probe, err := grpc.NewClient(healthAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	kubelet := healthpb.NewHealthClient(probe)
	get := &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}}
	if _, err := users.GetUser(t.Context(), get); err != nil {
		t.Fatalf("GetUser before the drain: %v", err)
	}

	// The preStop hook: signal, then wait the drain delay; the service is told by the same
	// environment it reads (MESHMART_DRAIN_DELAY) how long to wait.
	svc := exampleService(t, func(context.Context, *app.Setup) error {
		t.Error("the drain subcommand started the service")
		return nil
	})
	start := time.Now()
	env := envOf(map[string]string{"MESHMART_DRAIN_DELAY": drainDelay.String()})
	if err := app.Run(t.Context(), svc, []string{app.DrainCommand, "-pid", strconv.Itoa(p.Pid())}, env); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if took := time.Since(start); took < drainDelay {
		t.Errorf("drain returned after %v, before the drain delay (%v)", took, drainDelay)
	}
	if ids := registered(t, agent, "example"); len(ids) != 0 {
		t.Errorf("after the drain Consul still has %v", ids)
	}
	for _, c := range []struct {
		port string
		h    healthpb.HealthClient
	}{{"the main port", h}, {"the health port", kubelet}} {
		if got := health(t.Context(), c.h); got != "NOT_SERVING" {
			t.Errorf("health on %s after the drain = %s, want NOT_SERVING", c.port, got)
		}
	}
	// Well past several check intervals and registrar rounds: still out, still answering.
	time.Sleep(time.Second)
	if ids := registered(t, agent, "example"); len(ids) != 0 {
		t.Errorf("a second after the drain Consul has %v again", ids)
	}
	for i := range 20 {
		if _, err := users.GetUser(t.Context(), get); err != nil {
			t.Fatalf("GetUser %d after the drain: %v", i, err)
		}
	}

	// SIGTERM: the drain delay has passed already, so the stop does not wait it again.
	start = time.Now()
	p.Stop()
	if took := time.Since(start); took >= drainDelay/2 {
		t.Errorf("SIGTERM after the drain took %v to stop the service, want well under the drain delay (%v)", took, drainDelay)
	} else {
		t.Logf("stopped %v after SIGTERM (drain delay %v, already served by the drain)", took.Round(time.Millisecond), drainDelay)
	}
	if !strings.Contains(p.Logs(), `"drained_before":true`) {
		t.Errorf("the service's stop does not say it was drained before:\n%s", p.Logs())
	}
}

// TestDrainCommandRefuses: the drain subcommand signals exactly one existing process, never a
// process group, everyone or itself.
func TestDrainCommandRefuses(t *testing.T) {
	t.Parallel()
	tests := []struct{ pid, want string }{
		{"0", "must name one process"},
		{"-1", "must name one process"},
		{strconv.Itoa(os.Getpid()), "this drain command itself"},
		{"2147483646", "signal process 2147483646"}, // beyond any pid_max
	}
	for _, tt := range tests {
		err := app.Drain(t.Context(), []string{"-pid", tt.pid, "-drain-delay", "0s"}, noEnv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("drain -pid %s = %v, want an error with %q", tt.pid, err, tt.want)
		}
	}
}

// TestDrainBeforeServing: an App drained before it serves (before Run, or while a ReadyWhen gate
// holds it back) never registers in Consul, even once the gate opens, and never reports SERVING.
func TestDrainBeforeServing(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	for _, gated := range []bool{false, true} {
		t.Run("gated="+strconv.FormatBool(gated), func(t *testing.T) {
			cfg := testkit.TestConfig()
			cfg.ConsulAddr = agent.Addr
			srv, h := exampleServer(t, cfg)
			logs := &testkit.SyncBuffer{}
			a := app.New(slog.New(slog.NewTextHandler(logs, nil)))
			a.Serve(srv)
			ready := make(chan struct{})
			if gated {
				a.ReadyWhen("a gate", ready)
			} else {
				a.Drain()
			}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			testkit.Eventually(t, 5*time.Second, "the server answering", func() (bool, string) {
				got := health(t.Context(), h)
				return got != "unreachable", got
			})
			a.Drain()
			a.Drain() // any number of times
			close(ready)
			time.Sleep(4 * cfg.CheckInterval)
			if strings.Contains(logs.String(), "registered in consul") {
				t.Errorf("an App drained before serving registered:\n%s", logs)
			}
			if got := health(t.Context(), h); got != "NOT_SERVING" {
				t.Errorf("health of an App drained before serving = %s, want NOT_SERVING", got)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run = %v", err)
			}
		})
	}
	if ids := registered(t, agent, "example"); len(ids) != 0 {
		t.Errorf("Consul has %v", ids)
	}
}
