package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/tools/platform"
)

// TestJourneyOnThePlatform starts the platform as `make run` does, on free ports, and runs the
// smoke journey against it through grpcurl and, through the gateway, curl; then it stops the platform and checks that no process
// is left.
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
		consul: p.ConsulAddr, instances: map[string][]string{},
		adminEmail: p.Admin.Email, adminPassword: p.Admin.Password,
		cacert: p.PKI.BundleFile(), consulTokenFile: filepath.Join(secrets, "consul", "reader.token")}
	for _, svc := range programs {
		cfg.instances[svc] = p.Addrs(svc)
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
