package consul_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/testkit"
)

// TestDevAgentHasItsOwnDataDir starts a dev agent from the repository root, as `make run` does,
// and checks that it keeps its state in its own data directory: without one it read the
// services/ directory there as its persisted services and failed to decode services/Dockerfile.
func TestDevAgentHasItsOwnDataDir(t *testing.T) {
	t.Parallel()
	ports := make([]int, 4)
	for i := range ports {
		ports[i] = testkit.FreePort(t)
	}
	dir := filepath.Join(t.TempDir(), "consul")
	if err := consul.FreshDataDir(dir); err != nil {
		t.Fatal(err)
	}
	args := consul.DevAgentArgs("datadir-test", dir, consul.DevAgentPorts{HTTP: ports[0], SerfLAN: ports[1], SerfWAN: ports[2], Server: ports[3]})
	cmd := exec.Command(testkit.ConsulBinary(t), args...)
	cmd.Dir = testkit.RepoRoot(t)
	var out testkit.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	cfg := api.DefaultConfig()
	cfg.Address = net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := consul.WaitForLeader(t.Context(), client, 30*time.Second, nil); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	// The node is in the catalog, marked, once the first sync ran: what the platforms wait for.
	if err := consul.WaitForFirstSync(t.Context(), client, "datadir-test", time.Minute); err != nil {
		t.Errorf("%v\n%s", err, out.String())
	}
	if strings.Contains(out.String(), "services/Dockerfile") || strings.Contains(out.String(), "Failed decoding service file") {
		t.Errorf("the agent read the checkout's services/ directory as its own:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "node-id")); err != nil {
		t.Errorf("the agent keeps no state in its data directory: %v", err)
	}
}
