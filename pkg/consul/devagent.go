package consul

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/hashicorp/consul/api"
)

// AgentBinary returns the consul executable for a local dev agent: the one on PATH, else
// root/bin/consul, which `make consul` builds from the Go module proxy.
func AgentBinary(root string) (string, error) {
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	p := filepath.Join(root, "bin", "consul")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no consul on PATH and no %s: run `make consul` (it builds Consul from the Go module proxy)", p)
	}
	return p, nil
}

// DevAgentPorts are the ports a dev agent listens on; DNS and gRPC stay off.
type DevAgentPorts struct {
	HTTP, SerfLAN, SerfWAN, Server int
}

// DevAgentArgs are the arguments of `consul` for a single in-memory dev agent on loopback, as the
// test kit and `make run` start it, keeping its local state in dataDir (see FreshDataDir).
//
// A dev agent without -data-dir does not go without one: it reads and writes its local state
// (persisted services and checks) relative to its working directory, so that started from the
// repository root it tried to decode services/Dockerfile as a persisted service at start-up.
func DevAgentArgs(node, dataDir string, ports DevAgentPorts) []string {
	return []string{"agent", "-dev", "-bind=127.0.0.1", "-client=127.0.0.1", "-node=" + node, "-log-level=warn",
		"-data-dir=" + dataDir,
		"-hcl", fmt.Sprintf(`ports { http = %d, serf_lan = %d, serf_wan = %d, server = %d, dns = -1, grpc = -1, grpc_tls = -1 }`,
			ports.HTTP, ports.SerfLAN, ports.SerfWAN, ports.Server),
		// Every instance, resolver and health check talks to the agent from 127.0.0.1; the default
		// cap of 200 connections per client address is too low for many watchers and pollers.
		"-hcl", "limits { http_max_conns_per_client = 4096 }",
		// Marks the node in the catalog: WaitForFirstSync waits until the catalog shows it.
		"-node-meta=" + syncedMeta + ":true",
	}
}

// syncedMeta is the node metadata DevAgentArgs gives the agent: the catalog holds it only once
// the agent's first anti-entropy sync has written the node.
const syncedMeta = "meshmart-synced"

// FreshDataDir empties dir, making it if need be, so that a dev agent started on it begins with
// nothing, as a dev agent should: every instance registers again by itself.
func FreshDataDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o700)
}

// ErrAgentExited is what WaitForLeader returns when the agent's process exits first.
var ErrAgentExited = errors.New("consul agent exited at start")

// WaitForLeader polls the agent until it has a leader, for at most within; exited, when not
// nil, is closed if the agent's process exits, which ends the wait at once.
func WaitForLeader(ctx context.Context, client *api.Client, within time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(within)
	for {
		leader, err := client.Status().Leader()
		if err == nil && leader != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consul has no leader after %v (last error: %v)", within, err)
		}
		select {
		case <-exited:
			return ErrAgentExited
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitForFirstSync waits, for at most within, until the agent has written its node to the
// catalog, which it does in its first anti-entropy sync after electing itself leader. Until then
// services registered with the agent stay out of the catalog, and so out of every resolver; that
// sync is sometimes paused for 15-30 s after a dev agent's start ("Syncing node info failed")
// while the leader sets itself up. A test platform that waits for it starts every service on a
// catalog that works, instead of letting the first instances look dead.
func WaitForFirstSync(ctx context.Context, client *api.Client, node string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		n, _, err := client.Catalog().Node(node, nil)
		if err == nil && n != nil && n.Node != nil && n.Node.Meta[syncedMeta] == "true" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("consul has not written node %s to its catalog after %v (last error: %v)", node, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
