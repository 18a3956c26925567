package testkit

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshmart/meshmart/pkg/proc"
)

// Consul is a Consul dev agent (a single in-memory server) on free loopback ports.
type Consul struct {
	// Addr is the agent's HTTP address, host:port.
	Addr string

	t      testing.TB
	client *api.Client
	bin    string
	args   []string
	logs   *SyncBuffer
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited <-chan struct{}
}

// ConsulBinary returns the consul executable: the one on PATH, else bin/consul of the checkout,
// which `make consul` builds from the Go module proxy.
func ConsulBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("consul"); err == nil {
		return p
	}
	p := filepath.Join(RepoRoot(t), "bin", "consul")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("testkit: no consul on PATH and no %s: run `make consul` (builds it from the Go module proxy)", p)
	}
	return p
}

// StartConsul starts a dev agent and waits until it has a leader. It is stopped when the test
// ends.
func StartConsul(t testing.TB) *Consul {
	t.Helper()
	ports := freePorts(t, 4)
	c := &Consul{
		Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		t:    t,
		bin:  ConsulBinary(t),
		logs: &SyncBuffer{},
		args: []string{"agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1",
			"-node=testkit-" + strconv.Itoa(ports[0]), "-log-level=warn",
			"-hcl", fmt.Sprintf(`ports { http = %d, serf_lan = %d, serf_wan = %d, server = %d, dns = -1, grpc = -1, grpc_tls = -1 }`,
				ports[0], ports[1], ports[2], ports[3]),
			// Every test process talks to its agent from 127.0.0.1; the default cap of 200
			// connections per client address is too low for many watchers and pollers.
			"-hcl", "limits { http_max_conns_per_client = 4096 }",
		},
	}
	t.Cleanup(func() {
		c.Stop()
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

	client := c.Client()
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := client.Status().Leader()
		if err == nil && leader != "" {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("testkit: consul at %s has no leader after 30s (last error: %v)\n%s", c.Addr, err, c.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
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
	entries, _, err := c.Client().Health().Service(service, "", true, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, e := range entries {
		addrs = append(addrs, net.JoinHostPort(e.Service.Address, strconv.Itoa(e.Service.Port)))
	}
	return addrs, nil
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
