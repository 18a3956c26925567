// Command run is `make run`: the whole platform on this machine, with nothing but Go. It starts a
// Consul dev agent and two replicas of each service on SQLite files under data/, prints where
// everything is, and stops it all gracefully on Ctrl-C.
//
// Usage (from the repository root):
//
//	go run ./tools/run [-replicas 2] [-data data]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/meshmart/meshmart/tools/platform"
)

func main() {
	replicas := flag.Int("replicas", 2, "replicas of each service")
	data := flag.String("data", "data", "directory of the SQLite files and development secrets")
	flag.Parse()
	// Stop with whatever started us (make, go run, a CI script), even if it is killed outright:
	// Linux sends SIGTERM when the parent dies, and the platform then stops gracefully.
	_ = unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0, 0, 0)
	if os.Getppid() == 1 {
		return // the parent died before the request took effect
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *replicas, *data); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, replicas int, data string) error {
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		return fmt.Errorf("run it from the repository root (no go.work in %s)", root)
	}
	fmt.Println("building the services and starting Consul,", replicas, "replicas of each service and the gateway...")
	p, err := platform.Start(ctx, platform.Options{
		Root: root, DataDir: data, Replicas: replicas,
		Env: []string{"MESHMART_LOG_FORMAT=text"},
	})
	if err != nil {
		return err
	}
	defer p.Stop()

	var b strings.Builder
	fmt.Fprintf(&b, "\nmeshmart is up; Ctrl-C stops it.\n")
	fmt.Fprintf(&b, "  %-8s %s/ (the storefront; REST under /v1/, OpenAPI at /openapi.json, gRPC-Web and Connect)\n", "gateway", p.GatewayURL)
	fmt.Fprintf(&b, "  %-8s http://%s/ui (ACLs on: log in with the token in %s/secrets/consul/management.token)\n", "consul", p.ConsulAddr, data)
	for _, svc := range platform.Services {
		fmt.Fprintf(&b, "  %-8s %s\n", svc, strings.Join(p.Addrs(svc), "  "))
	}
	fmt.Fprintf(&b, "  %-8s %s (SQLite); identities, keys and tokens in %s/secrets\n", "data", data, data)
	fmt.Fprintf(&b, "  %-8s %s / %s (%s)\n", "admin", p.Admin.Email, p.Admin.Password, p.Admin.File)
	fmt.Fprintf(&b, "Try:\n  open %s/ in a browser\n  curl %s/v1/products\n  go tool grpcurl -cacert %s/secrets/ca.pem %s list\n  make smoke\n\n",
		p.GatewayURL, p.GatewayURL, data, p.Addrs("user")[0])
	fmt.Print(b.String())

	select {
	case <-ctx.Done():
		fmt.Println("stopping: every service leaves Consul and drains, then Consul stops")
		return nil
	case name := <-p.Died():
		return fmt.Errorf("%s exited on its own (see its output above); stopping everything", name)
	}
}
