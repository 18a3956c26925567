package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/tools/platform"
)

// TestJourneyOnThePlatform starts the platform as `make run` does, on free ports, and runs the
// smoke journey against it through grpcurl and, through the gateway, curl; then it degrades the
// platform (see degraded); then it stops the platform and checks that no process is left.
func TestJourneyOnThePlatform(t *testing.T) {
	grpcurl, err := exec.Command("go", "tool", "-n", "grpcurl").Output()
	if err != nil {
		t.Fatalf("go tool -n grpcurl: %v", err)
	}
	dir := t.TempDir()
	log := &testkit.SyncBuffer{}
	// Another test binary's platforms first (platform.Exclusive), and then the start and the two
	// journeys within 4 minutes: the wait must not eat the journeys' time.
	if err := platform.Exclusive(log); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	p, err := platform.Start(ctx, platform.Options{
		Root: testkit.RepoRoot(t), BinDir: filepath.Join(dir, "bin"), DataDir: filepath.Join(dir, "data"),
		FreePorts: true, Out: log,
		Env: []string{"MESHMART_CHECK_INTERVAL=300ms", "MESHMART_DRAIN_DELAY=200ms"},
	})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, log)
	}
	stopped := false
	defer func() {
		if !stopped {
			p.Stop()
		}
		if t.Failed() {
			t.Logf("platform output:\n%s", log)
		}
	}()

	secrets := filepath.Join(dir, "data", "secrets")
	cfg := config{grpcurl: strings.TrimSpace(string(grpcurl)), curl: "curl", gateway: p.GatewayURL,
		consul: p.ConsulAddr, host: "127.0.0.1", expected: map[string][]string{},
		adminEmail: p.Admin.Email, adminPassword: p.Admin.Password,
		cacert: p.PKI.BundleFile(), consulTokenFile: filepath.Join(secrets, "consul", "reader.token")}
	for _, svc := range platform.Programs {
		cfg.expected[svc] = p.Addrs(svc)
	}
	out, err := os.CreateTemp(dir, "smoke")
	if err != nil {
		t.Fatal(err)
	}
	if err := journey(ctx, cfg, out); err != nil {
		t.Fatal(err)
	}
	// A second journey on the same data: the names are its own.
	if err := journey(ctx, cfg, out); err != nil {
		t.Fatalf("second journey: %v", err)
	}

	degraded(ctx, t, p, cfg, out)

	p.Stop()
	stopped = true
	for _, in := range p.Instances {
		if err := in.Signal(0); err == nil {
			t.Errorf("%s still runs after Stop", in.Name)
		}
	}
	for _, want := range []string{"user-1 ", "order-2 ", "deregistered from consul"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the platform's output lacks %q", want)
		}
	}
}

// degraded stops user-2 (SIGTERM: it deregisters itself, as `docker compose stop user-2` makes
// it) and freezes payment-2 (SIGSTOP: registered, its health check failing), then checks that
// the journey expecting every replica fails at once, before any dial, naming both with what
// Consul says of them, and that with -replicas user=1,payment=1 it passes on what is left.
func degraded(ctx context.Context, t *testing.T, p *platform.Platform, cfg config, out *os.File) {
	t.Helper()
	instance := func(name string) *platform.Instance {
		i := slices.IndexFunc(p.Instances, func(in *platform.Instance) bool { return in.Name == name })
		if i < 0 {
			t.Fatalf("no instance %s", name)
		}
		return p.Instances[i]
	}
	user2, payment2 := instance("user-2"), instance("payment-2")
	if err := user2.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := payment2.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = payment2.Signal(syscall.SIGCONT) }()
	// user-2 deregisters before it exits: once it has, no journey can dial it while draining.
	for user2.Signal(0) == nil {
		time.Sleep(100 * time.Millisecond)
	}
	// user-2 gone, and payment-2's check critical (1 s timeout every 300 ms): the journey's
	// Consul step sees both once the two are true.
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for {
		start := time.Now()
		err = journey(ctx, cfg, out)
		took := time.Since(start)
		if err != nil && strings.Contains(err.Error(), "user-2 at "+user2.Addr+" is not registered in Consul") &&
			strings.Contains(err.Error(), "payment-2 at "+payment2.Addr+" (consul id payment-") {
			if took > 3*time.Second {
				t.Errorf("the degraded journey took %v to fail; want it to fail on Consul's answer, before any dial", took)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with user-2 stopped and payment-2 frozen, the journey expecting both: %v; want it to name both", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, want := range []string{"user: 1 of 2 instances passing in Consul", "payment: 1 of 2 instances passing in Consul", "is failing: gRPC health of payment critical", "-replicas"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the degraded journey's error lacks %q:\n%v", want, err)
		}
	}
	t.Logf("the degraded journey's error, as a user sees it:\n%v", err)

	fewer := cfg
	fewer.expected = map[string][]string{}
	for svc, addrs := range cfg.expected {
		fewer.expected[svc] = addrs
	}
	fewer.expected["user"] = []string{instance("user-1").Addr}
	fewer.expected["payment"] = []string{instance("payment-1").Addr}
	if err := journey(ctx, fewer, out); err != nil {
		t.Fatalf("the journey on the instances that pass, expecting one user and one payment: %v", err)
	}
	fmt.Fprintln(out, "degraded journey passed")
}
