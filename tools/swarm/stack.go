package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshmart/meshmart/pkg/consul"
)

// StackName is the name the stack is deployed under: its services are meshmart-swarm_user and so
// on. Not "meshmart", the compose project's name, whose volumes (meshmart_pgdata) it would share.
const StackName = "meshmart-swarm"

// Services are the stack's programs that run two replicas, register in Consul and publish their
// gRPC port on a port Docker picks, with that port inside the container.
var Services = map[string]int{"user": 50051, "order": 50052, "payment": 50053, "gateway": 50054}

// GatewayREST is the gateway's REST port inside its containers.
const GatewayREST = 8080

// images are the images the stack runs that the project builds (services/Dockerfile's SERVICE).
var images = []string{"devsetup", "user", "order", "payment", "gateway"}

// Stack is the swarm stack of one checkout: where its files are and how to reach it.
type Stack struct {
	// Root is the repository's root; the stack file is deploy/swarm/stack.yml under it.
	Root string
	// Env is added to docker's environment: the base images (the stand-ins' env file on offline
	// machines), which the stack file names as variables.
	Env []string
	// Log receives progress lines.
	Log io.Writer
}

// SecretsDir is where devsetup writes the stack's secrets, which the stack file reads.
func (s *Stack) SecretsDir() string { return filepath.Join(s.Root, "data", "swarm", "secrets") }

// PublicDir holds what a client on the host needs: the CA bundle, the Consul reader token and the
// admin's password (devsetup -public).
func (s *Stack) PublicDir() string { return filepath.Join(s.Root, "data", "swarm") }

// madeSwarmFile marks that Up turned the engine into a swarm, so that Down leaves it again.
func (s *Stack) madeSwarmFile() string { return filepath.Join(s.Root, "data", "swarm", "made-swarm") }

// ConsulAddr is the host address of the n-th Consul server (1, 2 or 3), as the stack publishes it.
func (s *Stack) ConsulAddr(n int) string {
	def := strconv.Itoa(8499 + n)
	return "127.0.0.1:" + s.getenv(fmt.Sprintf("CONSUL_%d_PORT", n), def)
}

// getenv reads a setting from Env, then the process' environment.
func (s *Stack) getenv(key, def string) string {
	for _, kv := range slices.Backward(s.Env) {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v
		}
	}
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func (s *Stack) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, "swarm: "+format+"\n", args...)
	}
}

// docker runs the docker CLI with the stack's environment in the repository's root and returns
// its standard output; a failure carries its standard error.
func (s *Stack) docker(ctx context.Context, args ...string) (string, error) {
	return s.run(ctx, "docker", args...)
}

func (s *Stack) run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = s.Root
	cmd.Env = append(os.Environ(), s.Env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// ReadEnvFile reads KEY=VALUE lines (comments and blank lines skipped), as docker compose's
// --env-file does.
func ReadEnvFile(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var env []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !strings.Contains(line, "=") {
			return nil, fmt.Errorf("%s: not KEY=VALUE: %q", path, line)
		}
		env = append(env, line)
	}
	return env, sc.Err()
}

// SwarmState is the engine's swarm state: "inactive", "active", ...
func (s *Stack) SwarmState(ctx context.Context) (string, error) {
	out, err := s.docker(ctx, "info", "--format", "{{.Swarm.LocalNodeState}}")
	return strings.TrimSpace(out), err
}

// EnsureSwarm makes this engine a single-node swarm when it is in none, and remembers it did.
func (s *Stack) EnsureSwarm(ctx context.Context) error {
	state, err := s.SwarmState(ctx)
	if err != nil {
		return err
	}
	if state == "active" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.madeSwarmFile()), 0o755); err != nil {
		return err
	}
	// The marker first: were the init to succeed and this process die, Down still leaves.
	if err := os.WriteFile(s.madeSwarmFile(), []byte("docker swarm init by tools/swarm\n"), 0o644); err != nil {
		return err
	}
	s.logf("making this engine a single-node swarm (docker swarm init --advertise-addr 127.0.0.1)")
	_, err = s.docker(ctx, "swarm", "init", "--advertise-addr", "127.0.0.1")
	return err
}

// Build builds the project's images with the tags the stack (and compose) run, meshmart/<name>:dev
// (MESHMART_TAG instead of dev when set): the first
// compiles every program, the others reuse its build stage. The classic builder, which needs
// no buildx.
func (s *Stack) Build(ctx context.Context) error {
	var args []string
	for _, k := range []string{"GO_IMAGE", "RUNTIME_IMAGE"} {
		if v := s.getenv(k, ""); v != "" {
			args = append(args, "--build-arg", k+"="+v)
		}
	}
	tag := s.getenv("MESHMART_TAG", "dev")
	// The classic builder: the machines this runs on in CI have no buildx.
	b := *s
	b.Env = append(slices.Clone(s.Env), "DOCKER_BUILDKIT=0")
	for _, img := range images {
		s.logf("building meshmart/%s:%s", img, tag)
		cmd := append([]string{"build", "--quiet", "-f", "services/Dockerfile", "--build-arg", "SERVICE=" + img,
			"-t", "meshmart/" + img + ":" + tag}, args...)
		if _, err := b.docker(ctx, append(cmd, ".")...); err != nil {
			return err
		}
	}
	return nil
}

// Secrets writes the stack's secrets with the project's devsetup (kept across runs): the CA and
// every identity, the Consul ACL, the admin's password, and the database passwords with
// PostgreSQL's init script for the stack's `postgres` service.
func (s *Stack) Secrets(ctx context.Context) error {
	_, err := s.run(ctx, "go", "run", "./pkg/cmd/devsetup", "-dir", s.SecretsDir(), "-postgres", "postgres:5432",
		"-public", s.PublicDir())
	return err
}

// Deploy deploys (or updates) the stack from the local images.
func (s *Stack) Deploy(ctx context.Context) error {
	s.logf("docker stack deploy %s", StackName)
	_, err := s.docker(ctx, "stack", "deploy", "--resolve-image", "never", "--prune",
		"-c", filepath.Join("deploy", "swarm", "stack.yml"), StackName)
	return err
}

// Up does everything `make swarm-up` promises: swarm mode, images (unless build is false),
// secrets, deploy, and a wait until everything is ready (WaitReady).
func (s *Stack) Up(ctx context.Context, build bool) error {
	start := time.Now()
	if err := s.EnsureSwarm(ctx); err != nil {
		return err
	}
	if build {
		if err := s.Build(ctx); err != nil {
			return err
		}
		s.logf("images built in %s", time.Since(start).Round(time.Second))
	}
	if err := s.Secrets(ctx); err != nil {
		return err
	}
	deployed := time.Now()
	if err := s.Deploy(ctx); err != nil {
		return err
	}
	if err := s.WaitReady(ctx); err != nil {
		return err
	}
	s.logf("up in %s (ready %s after the deploy)", time.Since(start).Round(time.Second), time.Since(deployed).Round(time.Second))
	return nil
}

// Deployed reports whether the stack has services on this engine.
func (s *Stack) Deployed(ctx context.Context) (bool, error) {
	if state, err := s.SwarmState(ctx); err != nil || state != "active" {
		return false, err
	}
	out, err := s.docker(ctx, "service", "ls", "-q", "--filter", "label=com.docker.stack.namespace="+StackName)
	return strings.TrimSpace(out) != "", err
}

// Down removes the stack, then its containers' volumes, and leaves swarm mode when Up entered it.
// The secrets' files stay (devsetup keeps them across runs; `rm -rf data/swarm` forgets them).
func (s *Stack) Down(ctx context.Context) error {
	if state, err := s.SwarmState(ctx); err != nil {
		return err
	} else if state == "active" {
		s.logf("docker stack rm %s", StackName)
		if _, err := s.docker(ctx, "stack", "rm", StackName); err != nil {
			return err
		}
		// stack rm returns before the tasks are gone; the volumes are in use until they are. Each
		// task may take its stop_grace_period (20 s) and a busy machine more: minutes, not seconds.
		label := "label=com.docker.stack.namespace=" + StackName
		if err := s.until(ctx, 5*time.Minute, "the stack's containers and network are gone", func() (bool, error) {
			c, err := s.docker(ctx, "ps", "-aq", "--filter", label)
			if err != nil {
				return false, err
			}
			// The containers of completed jobs (admin, consul-acl) outlive their services on
			// Docker 20.10: once no service is left, they are only history.
			if svcs, err := s.docker(ctx, "service", "ls", "-q", "--filter", label); err == nil && strings.TrimSpace(svcs) == "" && strings.TrimSpace(c) != "" {
				if _, err := s.docker(ctx, append([]string{"rm", "-f"}, strings.Fields(c)...)...); err != nil {
					return false, err
				}
				c = ""
			}
			n, err := s.docker(ctx, "network", "ls", "-q", "--filter", label)
			return strings.TrimSpace(c) == "" && strings.TrimSpace(n) == "", err
		}); err != nil {
			return err
		}
		vols, err := s.docker(ctx, "volume", "ls", "-q", "--filter", label)
		if err != nil {
			return err
		}
		if v := strings.Fields(vols); len(v) > 0 {
			s.logf("removing volumes %s", strings.Join(v, " "))
			if _, err := s.docker(ctx, append([]string{"volume", "rm"}, v...)...); err != nil {
				return err
			}
		}
	}
	if _, err := os.Stat(s.madeSwarmFile()); err == nil {
		s.logf("leaving swarm mode (tools/swarm entered it)")
		if _, err := s.docker(ctx, "swarm", "leave", "--force"); err != nil {
			return err
		}
		return os.Remove(s.madeSwarmFile())
	}
	return nil
}

// until calls ready every half second until it reports true, within d.
func (s *Stack) until(ctx context.Context, d time.Duration, what string, ready func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for {
		ok, err := ready()
		if ok && err == nil {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return fmt.Errorf("waiting until %s: %w (last error: %v)", what, ctx.Err(), last)
			}
			return fmt.Errorf("waiting until %s: %w", what, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// WaitReady waits until every service runs its replicas (and the jobs completed), the Consul
// servers have a leader and three alive members, and every instance of every service is passing
// in Consul.
func (s *Stack) WaitReady(ctx context.Context) error {
	var lastStatus string
	err := s.until(ctx, 6*time.Minute, "every service runs its replicas", func() (bool, error) {
		out, err := s.docker(ctx, "stack", "services", StackName, "--format", "{{.Name}}|{{.Mode}}|{{.Replicas}}")
		if err != nil {
			return false, err
		}
		ready := true
		for line := range strings.Lines(strings.TrimSpace(out)) {
			f := strings.Split(strings.TrimSpace(line), "|")
			if len(f) != 3 {
				continue
			}
			// A job is "0/1 (1/1 completed)"; a service "2/2".
			if strings.Contains(f[1], "job") {
				ready = ready && strings.Contains(f[2], "(1/1 completed)")
				continue
			}
			have, want, _ := strings.Cut(f[2], "/")
			ready = ready && have == want
		}
		if out != lastStatus {
			s.logf("services:\n%s", out)
			lastStatus = out
		}
		return ready && out != "", nil
	})
	if err != nil {
		return err
	}
	token, err := s.ReaderToken()
	if err != nil {
		return err
	}
	return s.until(ctx, 3*time.Minute, "Consul has a leader, three members and every instance passing", func() (bool, error) {
		if n, err := s.AliveMembers(ctx, s.ConsulAddr(1), token); err != nil || n != 3 {
			return false, err
		}
		for svc := range Services {
			n, err := s.Passing(ctx, s.ConsulAddr(1), token, svc)
			if err != nil || n != 2 {
				return false, err
			}
		}
		return true, nil
	})
}

// ReaderToken is the Consul token that reads the catalog, from devsetup's files.
func (s *Stack) ReaderToken() (string, error) {
	b, err := os.ReadFile(filepath.Join(s.SecretsDir(), "consul", "reader.token"))
	return strings.TrimSpace(string(b)), err
}

// consulAPI is a client of the Consul server at addr (the host port swarm published), each call
// bounded by 3 s: a killed server must not stall the fault test's checks.
func consulAPI(addr, token string) (*api.Client, error) {
	return api.NewClient(&api.Config{Address: addr, Token: token, HttpClient: &http.Client{Timeout: 3 * time.Second}})
}

// Leader is the address of the Raft leader the Consul server at addr knows, "" when none.
func (s *Stack) Leader(ctx context.Context, addr string) (string, error) {
	c, err := consulAPI(addr, "")
	if err != nil {
		return "", err
	}
	return c.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx))
}

// AliveMembers counts the servers the Consul server at addr sees alive (serf status 1), once it
// knows a leader.
func (s *Stack) AliveMembers(ctx context.Context, addr, token string) (int, error) {
	if leader, err := s.Leader(ctx, addr); err != nil || leader == "" {
		return 0, err
	}
	c, err := consulAPI(addr, token)
	if err != nil {
		return 0, err
	}
	members, err := c.Agent().Members(false)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, m := range members {
		if m.Status == 1 {
			n++
		}
	}
	return n, nil
}

// Passing counts the instances of service passing in the catalog the Consul server at addr serves.
func (s *Stack) Passing(ctx context.Context, addr, token, service string) (int, error) {
	c, err := consulAPI(addr, token)
	if err != nil {
		return 0, err
	}
	addrs, err := consul.Passing(ctx, c, service)
	return len(addrs), err
}

// Task is one running container of a service.
type Task struct {
	// Name is the task's name (meshmart-swarm_user.1.<task id>), which is also its container's.
	Name string
	// ID is its container's.
	ID string
	// Healthy is its image's health check's verdict.
	Healthy bool
	// Ports maps a port inside the container to the host port Docker published it on.
	Ports map[int]int
}

// Addr is where the host reaches the task's port inside the container: 127.0.0.1 and the host
// port Docker picked, "" when it is not published.
func (t Task) Addr(port int) string {
	p, ok := t.Ports[port]
	if !ok {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// Tasks lists the running containers of one of the stack's services, by task name.
func (s *Stack) Tasks(ctx context.Context, service string) ([]Task, error) {
	out, err := s.docker(ctx, "ps", "--no-trunc", "--filter", "label=com.docker.swarm.service.name="+StackName+"_"+service,
		"--format", "{{.ID}}\t{{.Names}}\t{{.Status}}\t{{.Ports}}")
	if err != nil {
		return nil, err
	}
	var tasks []Task
	for line := range strings.Lines(strings.TrimSpace(out)) {
		f := strings.Split(strings.TrimRight(line, "\n"), "\t")
		if len(f) != 4 {
			continue
		}
		t := Task{ID: f[0], Name: f[1], Healthy: strings.Contains(f[2], "(healthy)"), Ports: parsePorts(f[3])}
		tasks = append(tasks, t)
	}
	slices.SortFunc(tasks, func(a, b Task) int { return strings.Compare(a.Name, b.Name) })
	return tasks, nil
}

// parsePorts reads docker ps' ports column: "0.0.0.0:32768->50051/tcp, [::]:32768->50051/tcp".
func parsePorts(col string) map[int]int {
	ports := map[int]int{}
	for m := range strings.SplitSeq(col, ", ") {
		pub, inner, ok := strings.Cut(m, "->")
		if !ok {
			continue
		}
		_, hostPort, err := net.SplitHostPort(pub)
		if err != nil {
			continue
		}
		hp, err1 := strconv.Atoi(hostPort)
		cp, err2 := strconv.Atoi(strings.TrimSuffix(inner, "/tcp"))
		if err1 == nil && err2 == nil {
			ports[cp] = hp
		}
	}
	return ports
}

// HealthyAddrs are the host addresses of port on the service's healthy tasks.
func (s *Stack) HealthyAddrs(ctx context.Context, service string, port int) ([]string, error) {
	tasks, err := s.Tasks(ctx, service)
	if err != nil {
		return nil, err
	}
	var addrs []string
	for _, t := range tasks {
		if a := t.Addr(port); a != "" && t.Healthy {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("no healthy task of " + service + " publishes its port")
	}
	return addrs, nil
}
