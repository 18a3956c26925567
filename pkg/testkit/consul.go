package testkit

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/proc"
)

// Consul is a Consul dev agent (a single in-memory server) on free loopback ports.
type Consul struct {
	// Addr is the agent's HTTP address, host:port.
	Addr string

	t       testing.TB
	client  *api.Client
	bin     string
	args    []string
	dataDir string
	acl     *consul.ACL
	logs    *SyncBuffer
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  <-chan struct{}
}

// ConsulBinary returns the consul executable: the one on PATH, else bin/consul of the checkout,
// which `make consul` builds from the Go module proxy.
func ConsulBinary(t testing.TB) string {
	t.Helper()
	p, err := consul.AgentBinary(RepoRoot(t))
	if err != nil {
		t.Fatalf("testkit: %v", err)
	}
	return p
}

// StartConsul starts a dev agent and waits until it has a leader. It is stopped when the test
// ends.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	return startConsul(t, nil)
}

// StartConsulACL starts a dev agent as StartConsul does, with ACLs on and deny by default, and
// creates acl's tokens (again after each Start); Client uses the management token.
func StartConsulACL(t testing.TB, acl consul.ACL) *Consul {
	t.Helper()
	return startConsul(t, &acl)
}

func startConsul(t testing.TB, acl *consul.ACL) *Consul {
	t.Helper()
	ports := freePorts(t, 4)
	dataDir, err := os.MkdirTemp("", "testkit-consul-")
	if err != nil {
		t.Fatalf("testkit: consul data directory: %v", err)
	}
	c := &Consul{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		t:       t,
		bin:     ConsulBinary(t),
		logs:    &SyncBuffer{},
		dataDir: dataDir,
		args: consul.DevAgentArgs("testkit-"+strconv.Itoa(ports[0]), dataDir,
			consul.DevAgentPorts{HTTP: ports[0], SerfLAN: ports[1], SerfWAN: ports[2], Server: ports[3]}),
		acl: acl,
	}
	if acl != nil {
		c.args = append(c.args, "-hcl", acl.AgentConfig())
	}
	t.Cleanup(func() {
		c.Stop()
		_ = os.RemoveAll(dataDir)
		if t.Failed() {
			t.Logf("consul agent output:\n%s", c.logs.String())
		}
	})
	c.Start()
	return c
}

// Start starts the agent again after Stop, on the same ports; a dev agent starts empty.
func (c *Consul) Start() {
	c.t.Helper()
	c.mu.Lock()
	if err := consul.FreshDataDir(c.dataDir); err != nil {
		c.mu.Unlock()
		c.t.Fatalf("testkit: consul data directory: %v", err)
	}
	cmd := exec.Command(c.bin, c.args...)
	cmd.Stdout, cmd.Stderr = c.logs, c.logs
	// The agent dies with the test binary even when cleanups do not run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := proc.Start(cmd)
	if err != nil {
		c.mu.Unlock()
		c.t.Fatalf("testkit: start consul: %v", err)
	}
	c.cmd, c.exited = cmd, exited
	c.mu.Unlock()

	if err := consul.WaitForLeader(context.Background(), c.Client(), 30*time.Second, exited); err != nil {
		c.t.Fatalf("testkit: consul at %s: %v\n%s", c.Addr, err, c.logs.String())
	}
	if c.acl != nil {
		if err := consul.ApplyWhenReady(context.Background(), *c.acl, c.Addr, 30*time.Second); err != nil {
			c.t.Fatalf("testkit: consul ACLs: %v\n%s", err, c.logs.String())
		}
	}
}

// Stop stops the agent and waits for it to exit.
func (c *Consul) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
	c.cmd = nil
}

// Client returns an API client for the agent, one for the agent's lifetime so that its
// connections are reused.
func (c *Consul) Client() *api.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.client == nil {
		cfg := api.DefaultConfig()
		cfg.Address = c.Addr
		if c.acl != nil {
			cfg.Token = c.acl.Management
		}
		client, err := api.NewClient(cfg)
		if err != nil {
			c.t.Fatalf("testkit: consul client: %v", err)
		}
		c.client = client
	}
	return c.client
}

// Passing returns the addresses of the passing instances of service, sorted.
func (c *Consul) Passing(ctx context.Context, service string) ([]string, error) {
	return consul.Passing(ctx, c.Client(), service)
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes, such as a child's stdout and stderr or
// a logger used by several goroutines.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports, err := proc.FreePorts(n)
	if err != nil {
		t.Fatalf("testkit: free port: %v", err)
	}
	return ports
}
