// Command swarm brings meshmart's Docker Swarm stack (deploy/swarm/stack.yml) up and down and says
// how to reach it; `make swarm-up`, `make swarm-down` and `make smoke-swarm` run it, and its test
// (MESHMART_SWARM=1) is the live fault test on the stack.
//
// Usage:
//
//	swarm up [-env-file tools/standins/standins.env] [-build=true]
//	swarm down
//	swarm addrs        # each task's published ports, as 127.0.0.1:<port>
//	swarm smoke-flags  # the flags that point tools/smoke at the stack
//
// The services publish their ports in host mode on ports Docker picks (two replicas on one node
// cannot share one, and a start-first update runs two tasks of a slot side by side), so the
// addresses change with every task: ask this command, or `docker ps`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "swarm:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("want a command: up, down, addrs or smoke-flags")
	}
	fs := flag.NewFlagSet("swarm "+args[0], flag.ContinueOnError)
	envFile := fs.String("env-file", "", "KEY=VALUE file of the base images (tools/standins' env file on offline machines); it also deploys no Grafana unless GRAFANA_REPLICAS is set")
	build := fs.Bool("build", true, "build the images first (up)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	s := &Stack{Root: root, Log: os.Stderr}
	if *envFile != "" {
		if s.Env, err = ReadEnvFile(*envFile); err != nil {
			return err
		}
		// No Grafana image can be built offline.
		if os.Getenv("GRAFANA_REPLICAS") == "" {
			s.Env = append(s.Env, "GRAFANA_REPLICAS=0")
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "up":
		ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
		defer cancel()
		return s.Up(ctx, *build)
	case "down":
		return s.Down(ctx)
	case "addrs":
		return printAddrs(ctx, s)
	case "smoke-flags":
		flags, err := smokeFlags(ctx, s)
		if err != nil {
			return err
		}
		fmt.Println(strings.Join(flags, " "))
		return nil
	}
	return fmt.Errorf("unknown command %q: want up, down, addrs or smoke-flags", args[0])
}

// printAddrs prints every task of the stack's services with its published ports.
func printAddrs(ctx context.Context, s *Stack) error {
	names := []string{"user", "order", "payment", "gateway"}
	for _, svc := range names {
		tasks, err := s.Tasks(ctx, svc)
		if err != nil {
			return err
		}
		for _, t := range tasks {
			health := "starting or unhealthy"
			if t.Healthy {
				health = "healthy"
			}
			var ports []string
			for inner, host := range t.Ports {
				ports = append(ports, fmt.Sprintf("%d: 127.0.0.1:%d", inner, host))
			}
			slices.Sort(ports)
			fmt.Printf("%-8s %-45s %-22s %s\n", svc, t.Name, health, strings.Join(ports, "  "))
		}
	}
	for n := 1; n <= 3; n++ {
		fmt.Printf("%-8s consul-%d %s\n", "consul", n, "http://"+s.ConsulAddr(n)+"/ui")
	}
	return nil
}

// smokeFlags point tools/smoke at the stack: every healthy task's gRPC address, the gateway's REST
// URL, consul-1, and the CA, reader token and admin password devsetup copied into data/swarm.
func smokeFlags(ctx context.Context, s *Stack) ([]string, error) {
	rel := func(p string) string {
		if r, err := filepath.Rel(s.Root, p); err == nil {
			return r
		}
		return p
	}
	pub := s.PublicDir()
	flags := []string{
		"-cacert", rel(filepath.Join(pub, "ca.pem")),
		"-consul-token-file", rel(filepath.Join(pub, "consul-reader.token")),
		"-admin-password-file", rel(filepath.Join(pub, "admin-password")),
		"-consul", s.ConsulAddr(1),
	}
	for _, svc := range []string{"user", "order", "payment", "gateway"} {
		addrs, err := s.HealthyAddrs(ctx, svc, Services[svc])
		if err != nil {
			return nil, err
		}
		flags = append(flags, "-instances", svc+"="+strings.Join(addrs, ","))
	}
	rest, err := s.HealthyAddrs(ctx, "gateway", GatewayREST)
	if err != nil {
		return nil, err
	}
	return append(flags, "-gateway", "http://"+rest[0]), nil
}

// repoRoot is the repository's root: the directory above tools/ holding go.work.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no go.work above %s: run it inside the repository", dir)
		}
	}
}
