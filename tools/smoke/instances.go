package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/meshmart/meshmart/tools/platform"
)

// replicasFlag is -replicas: how many instances of each service, and of the gateway, must pass
// in Consul. It is a map so that flag.Var can fill the value main holds.
type replicasFlag map[string]int

// defaultReplicas are make run's and the compose stack's: two replicas of each service, one
// gateway.
func defaultReplicas(program string) int {
	if program == platform.Gateway {
		return 1
	}
	return 2
}

// String shows the counts as -replicas takes them.
func (f replicasFlag) String() string {
	var parts []string
	for _, p := range platform.Programs {
		parts = append(parts, p+"="+strconv.Itoa(f.count(p)))
	}
	return strings.Join(parts, ",")
}

// Set takes one number for every service (the gateway keeps 1: it is one instance on its
// well-known ports) or service=count pairs separated by commas.
func (f replicasFlag) Set(v string) error {
	if n, err := strconv.Atoi(v); err == nil {
		if n < 1 {
			return fmt.Errorf("%d replicas: the journey needs at least one of each service", n)
		}
		for _, svc := range platform.Services {
			f[svc] = n
		}
		return nil
	}
	for pair := range strings.SplitSeq(v, ",") {
		name, count, ok := strings.Cut(strings.TrimSpace(pair), "=")
		n, err := strconv.Atoi(count)
		switch {
		case !ok || err != nil:
			return fmt.Errorf("%q: want a number or service=count pairs such as user=1,order=2", pair)
		case !slices.Contains(platform.Programs, name):
			return fmt.Errorf("%q: no such service (want one of %s)", name, strings.Join(platform.Programs, ", "))
		case n < 1:
			return fmt.Errorf("%s=%d: the journey needs at least one instance of each", name, n)
		}
		f[name] = n
	}
	return nil
}

func (f replicasFlag) count(program string) int {
	if n, ok := f[program]; ok {
		return n
	}
	return defaultReplicas(program)
}

// addrs are the well-known addresses on host of the instances that must pass: replica n of a
// service on its n-th port (platform.Addrs), the gateway on its gRPC port.
func (f replicasFlag) addrs(host string) map[string][]string {
	out := map[string][]string{}
	for _, svc := range platform.Services {
		out[svc] = platform.Addrs(host, svc, f.count(svc))
	}
	out[platform.Gateway] = []string{net.JoinHostPort(host, strconv.Itoa(platform.GatewayPorts.GRPC))}
	return out
}

// consulEntry is the part of an entry of Consul's /v1/health/service/<name> that smoke reads.
type consulEntry struct {
	Node struct {
		Address string
	}
	Service struct {
		ID      string
		Address string
		Port    int
	}
	Checks []struct {
		Name, Status, Output string
	}
}

// addr is the instance's address as registered (the node's when the service names none).
func (e consulEntry) addr() string {
	host := e.Service.Address
	if host == "" {
		host = e.Node.Address
	}
	return net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
}

// failing describes the checks of the entry that do not pass, or is empty when all pass.
func (e consulEntry) failing() string {
	var out []string
	for _, c := range e.Checks {
		if c.Status != "passing" {
			out = append(out, fmt.Sprintf("%s %s: %s", c.Name, c.Status, strings.TrimSpace(c.Output)))
		}
	}
	return strings.Join(out, "; ")
}

// reachable is where smoke dials an instance Consul registered at addr. The compose stack's
// instances register under their container names (user-2:50051, gateway:50054), which only its
// network resolves; the host reaches replica n on that replica's well-known port, as
// docker-compose.yml publishes it. Any other address (make run's, a test's) is dialled as it is.
func reachable(host, program, addr string) string {
	name, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if program == platform.Gateway && name == platform.Gateway {
		return net.JoinHostPort(host, strconv.Itoa(platform.GatewayPorts.GRPC))
	}
	n, err := strconv.Atoi(strings.TrimPrefix(name, program+"-"))
	if !strings.HasPrefix(name, program+"-") || err != nil || n < 1 {
		return addr
	}
	return platform.Addrs(host, program, n)[n-1]
}

// passing asks Consul, with the reader token, which instances of each service and of the gateway
// pass their health checks, and returns their addresses as smoke reaches them. Fewer passing
// than expected is an error that names, for every service, each expected instance that does not
// pass: its replica name and address, and either its Consul id, registered address and failing
// check's output, or that Consul does not know it (a stopped replica deregisters itself). It also
// checks that ACLs are on: without a token the catalog shows nothing.
func (r runner) passing(ctx context.Context) (map[string][]string, error) {
	token, err := os.ReadFile(r.cfg.consulTokenFile)
	if err != nil {
		return nil, fmt.Errorf("consul read token: %w", err)
	}
	passing := map[string][]string{}
	var short []string
	for _, svc := range platform.Programs {
		expected := r.cfg.expected[svc]
		url := "http://" + r.cfg.consul + "/v1/health/service/" + svc
		var entries []consulEntry
		if err := getJSONAs(ctx, url, strings.TrimSpace(string(token)), &entries); err != nil {
			return nil, fmt.Errorf("consul health of %s: %w", svc, err)
		}
		failing := map[string]consulEntry{} // by the address smoke reaches it on
		for _, e := range entries {
			at := reachable(r.cfg.host, svc, e.addr())
			if e.failing() == "" {
				passing[svc] = append(passing[svc], at)
			} else {
				failing[at] = e
			}
		}
		slices.Sort(passing[svc])
		r.step("%s: %d of %d expected instances passing in Consul at %s: %v", svc, len(passing[svc]), len(expected), r.cfg.consul, passing[svc])
		var problems []string
		givenShort := false
		if r.cfg.given[svc] {
			// Consul's addresses are not where the host reaches these instances (-instances):
			// count what passes, name what fails, and call the given addresses.
			if n := len(passing[svc]); n < len(expected) {
				givenShort = true
				problems = append(problems, fmt.Sprintf("%d of the %d instances at %v pass in Consul", n, len(expected), expected))
			}
			passing[svc], expected = expected, nil
		}
		for i, at := range expected {
			if slices.Contains(passing[svc], at) {
				continue
			}
			name := fmt.Sprintf("%s-%d", svc, i+1)
			if svc == platform.Gateway {
				name = svc
			}
			if e, ok := failing[at]; ok {
				problems = append(problems, fmt.Sprintf("%s at %s (consul id %s, address %s) is failing: %s", name, at, e.Service.ID, e.addr(), e.failing()))
				delete(failing, at)
			} else {
				problems = append(problems, fmt.Sprintf("%s at %s is not registered in Consul (stopped, or deregistered)", name, at))
			}
		}
		// Failing instances at addresses smoke did not expect (another port plan) are named too.
		for at, e := range failing {
			problems = append(problems, fmt.Sprintf("%s instance at %s (consul id %s, address %s) is failing: %s", svc, at, e.Service.ID, e.addr(), e.failing()))
		}
		slices.Sort(problems)
		for _, p := range problems {
			r.step("  %s", p)
		}
		if givenShort || len(passing[svc]) < len(expected) {
			short = append(short, fmt.Sprintf("%s: %d of %d instances passing in Consul:\n  %s", svc, len(passing[svc]), len(expected), strings.Join(problems, "\n  ")))
		}
		// ACLs deny by default: without a token the catalog shows nothing.
		var anonymous []consulEntry
		if err := getJSON(ctx, url, &anonymous); err != nil {
			return nil, fmt.Errorf("consul health of %s without a token: %w", svc, err)
		}
		if len(anonymous) != 0 {
			return nil, fmt.Errorf("consul shows %d %s instances to a client without a token: ACLs are off", len(anonymous), svc)
		}
	}
	if len(short) > 0 {
		return nil, errors.New(strings.Join(short, "\n") + "\n(-replicas sets how many must pass; see smoke -h)")
	}
	return passing, nil
}
