// Package platform runs the whole meshmart platform on one machine, with nothing but Go: a Consul
// dev agent, replicas of the user, payment and order services and one REST gateway in front of
// them, each a real process listening on loopback, registered in Consul, and storing its data in
// SQLite files (or the databases it is given). `make run` is its command (tools/run); the smoke test and the benchmarks start the
// platform through it too.
package platform

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/devsetup"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/proc"
)

// Services are the platform's services, in start order: order calls the other two.
var Services = []string{"user", "payment", "order"}

// Gateway is the REST, gRPC-Web and Connect edge (services/gateway): one instance, started after
// the services, which it finds through Consul.
const Gateway = "gateway"

// Programs are the platform's processes besides Consul, a binary each: the services, then the
// gateway.
var Programs = append(slices.Clone(Services), Gateway)

// GatewayPorts are the gateway's well-known ports: REST (and its page) on 8080, its chassis gRPC
// server (health) on 50054 and its metrics on 60054. The compose stack publishes the same ones.
var GatewayPorts = struct{ REST, GRPC, Metrics int }{8080, 50054, 60054}

// programs are every program the platform builds and gives an identity: the services and the
// gateway.
func programs() []string { return append(slices.Clone(Services), Gateway) }

// basePorts are the gRPC ports of the first replica of each service; replica i listens 10*i
// above it (user 50051 and 50061, order 50052 and 50062, payment 50053 and 50063), its metrics
// 10000 above its gRPC port. The compose stack publishes the same ports.
var basePorts = map[string]int{"user": 50051, "order": 50052, "payment": 50053}

// ConsulHTTPPort is the Consul agent's HTTP port when the platform runs on well-known ports.
const ConsulHTTPPort = 8500

// Addrs returns the well-known gRPC addresses of a service's replicas, on host.
func Addrs(host, service string, replicas int) []string {
	addrs := make([]string, replicas)
	for i := range addrs {
		addrs[i] = net.JoinHostPort(host, strconv.Itoa(basePorts[service]+10*i))
	}
	return addrs
}

// Options configure Start. The zero value, with Root set, is `make run`.
type Options struct {
	// Root is the repository root: service binaries are built from it into BinDir.
	Root string
	// BinDir receives the service binaries; default Root/bin.
	BinDir string
	// DataDir holds the SQLite files and, in DataDir/secrets, the development secrets
	// (pkg/devsetup: identities, the signing key, Consul tokens, the admin's password); default
	// Root/data.
	DataDir string
	// Replicas of each service; default 2.
	Replicas int
	// FreePorts puts every process on free ports instead of the well-known ones, so that tests
	// run beside a `make run`. Processes that start such platforms take turns: the first Start
	// of a process waits until no other process holds platforms (see exclusive).
	FreePorts bool
	// Databases maps a service to its DATABASE_URL; a missing one is a SQLite file in DataDir.
	Databases map[string]string
	// WithoutGateway leaves the gateway out: the fault and security suites load the services
	// directly, and an idle gateway would only be one more process to rotate, restart and count.
	WithoutGateway bool
	// Env is added to every service's environment (MESHMART_* settings, OTEL_*).
	Env []string
	// Out receives every process's output, each line prefixed with the instance's name;
	// default os.Stdout.
	Out io.Writer
}

// Instance is one running service process.
type Instance struct {
	Name        string // user-1, user-2, ...
	Service     string
	Addr        string // gRPC host:port
	MetricsAddr string // /metrics host:port

	bin string
	env []string
	p   *process
}

// AdminEmail is the email of the admin Start makes sure of in the user database.
const AdminEmail = devsetup.AdminEmail

// Credentials are an account's email and password, and the file the password is kept in.
type Credentials struct {
	Email, Password, File string
}

// Platform is a running platform.
type Platform struct {
	// ConsulAddr is the Consul agent's HTTP address.
	ConsulAddr string
	Instances  []*Instance
	// Admin is the user service's admin (AdminEmail), made with `user admin` at every start
	// with the password kept in DataDir/secrets/admin/password, made once.
	Admin Credentials

	// GatewayURL is the gateway's base URL (http://127.0.0.1:8080 on the well-known ports): the
	// storefront page at /, REST under /v1/, /openapi.json, gRPC-Web and Connect. Empty with
	// Options.WithoutGateway.
	GatewayURL string

	// ACL is the Consul agent's ACL: its management token, a token per service, and a reader.
	ACL consul.ACL
	// PKI is the development CA that issued every service's identity; its BundleFile is what a
	// client verifies the services with (grpcurl -cacert).
	PKI *identity.DevCA

	opts      Options
	out       *prefixer
	consul    *process
	consulBin string
	plan      portPlan
	died      chan string
}

// Start builds the services, makes sure the user database holds the admin (Platform.Admin),
// starts Consul and every replica, and returns once Consul reports every instance passing its
// health check. On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Platform, err error) {
	if opts.Root == "" {
		return nil, errors.New("platform: Options.Root is required")
	}
	opts.BinDir = or(opts.BinDir, filepath.Join(opts.Root, "bin"))
	opts.DataDir = or(opts.DataDir, filepath.Join(opts.Root, "data"))
	if opts.Replicas == 0 {
		opts.Replicas = 2
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.FreePorts {
		began := time.Now()
		if err := exclusive(opts.Out); err != nil {
			return nil, err
		}
		var cancel context.CancelFunc
		ctx, cancel = extendDeadline(ctx, time.Since(began))
		defer cancel()
	}
	p := &Platform{opts: opts, out: &prefixer{w: opts.Out, width: len("payment-2")}, died: make(chan string, 16)}
	defer func() {
		if err != nil {
			p.Stop()
		}
	}()

	consulBin, err := consul.AgentBinary(opts.Root)
	if err != nil {
		return nil, err
	}
	ports, err := p.ports(ctx)
	if err != nil {
		return nil, err
	}
	if err := p.build(ctx); err != nil {
		return nil, err
	}
	secrets, err := p.secrets()
	if err != nil {
		return nil, err
	}
	p.consulBin, p.plan = consulBin, ports
	p.Admin = Credentials{Email: AdminEmail, Password: secrets.AdminPassword, File: secrets.AdminPasswordFile()}
	if err := p.startConsul(ctx); err != nil {
		return nil, err
	}

	common := []string{"CONSUL_HTTP_ADDR=" + p.ConsulAddr}
	// Only the user service holds the private key; the others fetch the public keys from it.
	keysTarget := "MESHMART_AUTH_KEYS_TARGET=consul://" + p.ConsulAddr + "/user"
	for _, svc := range Services {
		env := append(slices.Clone(common), devsetup.Env(svc, secrets.ServiceDir(svc))...)
		switch svc {
		case "payment":
			env = append(env, keysTarget)
		case "order":
			// The demo catalog, so that orders of its SKUs (loadkit.OrderRequest) can be priced.
			env = append(env, keysTarget, "MESHMART_USER_TARGET=consul://"+p.ConsulAddr+"/user",
				"MESHMART_PAYMENT_TARGET=consul://"+p.ConsulAddr+"/payment",
				"MESHMART_CATALOG_SEED="+filepath.Join(p.opts.Root, "services", "order", "catalog.json"))
		}
		db := opts.Databases[svc]
		if db == "" {
			db = filepath.Join(opts.DataDir, svc+".sqlite")
		}
		env = append(env, "DATABASE_URL="+db)
		if svc == "user" {
			if err := p.ensureAdmin(ctx, db); err != nil {
				return nil, err
			}
		}
		for i := range opts.Replicas {
			grpcPort, metricsPort := ports.service[svc][i], ports.metrics[svc][i]
			in := &Instance{
				Name:        fmt.Sprintf("%s-%d", svc, i+1),
				Service:     svc,
				Addr:        net.JoinHostPort("127.0.0.1", strconv.Itoa(grpcPort)),
				MetricsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(metricsPort)),
				bin:         filepath.Join(opts.BinDir, svc),
			}
			in.env = append(slices.Clone(env), "MESHMART_GRPC_ADDR="+in.Addr, "MESHMART_HTTP_ADDR="+in.MetricsAddr)
			in.env = append(in.env, opts.Env...)
			if err := p.startInstance(in); err != nil {
				return nil, err
			}
			p.Instances = append(p.Instances, in)
		}
	}
	if !opts.WithoutGateway {
		if err := p.startGateway(common, keysTarget, secrets); err != nil {
			return nil, err
		}
	}
	if err := p.WaitPassing(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	return p, nil
}

// startGateway starts the gateway, which finds the services through Consul and calls them over
// mutual TLS as itself.
func (p *Platform) startGateway(common []string, keysTarget string, secrets *devsetup.Secrets) error {
	rest := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.plan.gateway.REST))
	p.GatewayURL = "http://" + rest
	in := &Instance{
		Name:        Gateway,
		Service:     Gateway,
		Addr:        net.JoinHostPort("127.0.0.1", strconv.Itoa(p.plan.gateway.GRPC)),
		MetricsAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.plan.gateway.Metrics)),
		bin:         filepath.Join(p.opts.BinDir, Gateway),
	}
	in.env = append(slices.Clone(common), devsetup.Env(Gateway, secrets.ServiceDir(Gateway))...)
	in.env = append(in.env, keysTarget, "MESHMART_REST_ADDR="+rest,
		"MESHMART_GRPC_ADDR="+in.Addr, "MESHMART_HTTP_ADDR="+in.MetricsAddr)
	for _, svc := range Services {
		in.env = append(in.env, "MESHMART_"+strings.ToUpper(svc)+"_TARGET=consul://"+p.ConsulAddr+"/"+svc)
	}
	in.env = append(in.env, p.opts.Env...)
	if err := p.startInstance(in); err != nil {
		return err
	}
	p.Instances = append(p.Instances, in)
	return nil
}

// Addrs returns the gRPC addresses of a service's instances.
func (p *Platform) Addrs(service string) []string {
	var addrs []string
	for _, in := range p.Instances {
		if in.Service == service {
			addrs = append(addrs, in.Addr)
		}
	}
	return addrs
}

// Died reports the name of each process that exits without having been asked to.
func (p *Platform) Died() <-chan string { return p.died }

// Stop stops every service gracefully (SIGTERM: they leave Consul, drain and stop; SIGKILL
// after 30 seconds), then Consul, and waits for all of them.
func (p *Platform) Stop() {
	var wg sync.WaitGroup
	for _, in := range p.Instances {
		wg.Go(func() { in.p.stop(30 * time.Second) })
	}
	wg.Wait()
	if p.consul != nil {
		p.consul.stop(10 * time.Second)
	}
}

// ports are the ports every process listens on.
type portPlan struct {
	consul           consul.DevAgentPorts
	service, metrics map[string][]int
	gateway          struct{ REST, GRPC, Metrics int }
}

func (p *Platform) ports(ctx context.Context) (portPlan, error) {
	plan := portPlan{service: map[string][]int{}, metrics: map[string][]int{}}
	if p.opts.FreePorts {
		n := 4 + 2*len(Services)*p.opts.Replicas + 3
		free, err := proc.FreePorts(n)
		if err != nil {
			return plan, err
		}
		plan.consul = consul.DevAgentPorts{HTTP: free[0], SerfLAN: free[1], SerfWAN: free[2], Server: free[3]}
		free = free[4:]
		for _, svc := range Services {
			plan.service[svc], plan.metrics[svc] = free[:p.opts.Replicas], free[p.opts.Replicas:2*p.opts.Replicas]
			free = free[2*p.opts.Replicas:]
		}
		plan.gateway.REST, plan.gateway.GRPC, plan.gateway.Metrics = free[0], free[1], free[2]
		return plan, nil
	}
	plan.consul = consul.DevAgentPorts{HTTP: ConsulHTTPPort, SerfLAN: 8301, SerfWAN: 8302, Server: 8300}
	wanted := []int{plan.consul.HTTP, plan.consul.SerfLAN, plan.consul.SerfWAN, plan.consul.Server}
	for _, svc := range Services {
		for i := range p.opts.Replicas {
			port := basePorts[svc] + 10*i
			plan.service[svc] = append(plan.service[svc], port)
			plan.metrics[svc] = append(plan.metrics[svc], port+10000)
			wanted = append(wanted, port, port+10000)
		}
	}
	plan.gateway = GatewayPorts
	wanted = append(wanted, GatewayPorts.REST, GatewayPorts.GRPC, GatewayPorts.Metrics)
	return plan, waitForPorts(ctx, wanted, p.opts.Out)
}

// waitForPorts returns once every port can be listened on. A port something listens on means
// the platform (or something else) already runs there: an error at once. A port held by no
// listener is held by a connection: the well-known ports lie in the kernel's ephemeral range,
// so a recent outgoing connection from that port, lingering in TIME-WAIT, blocks it for up to
// a minute; that is waited out.
func waitForPorts(ctx context.Context, ports []int, out io.Writer) error {
	deadline := time.Now().Add(90 * time.Second)
	for said := false; ; said = true {
		var serving, held []string
		for _, port := range ports {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
			lis, err := net.Listen("tcp", addr)
			if err == nil {
				lis.Close()
				continue
			}
			if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				conn.Close()
				serving = append(serving, strconv.Itoa(port))
			} else {
				held = append(held, strconv.Itoa(port))
			}
		}
		switch {
		case len(serving) > 0:
			return fmt.Errorf("ports %s are in use: is the platform already running (make run, or docker compose up)?", strings.Join(serving, ", "))
		case len(held) == 0:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("ports %s are still held by connections after 90s", strings.Join(held, ", "))
		case !said:
			fmt.Fprintf(out, "waiting for ports %s: a closing connection holds them (up to a minute)\n", strings.Join(held, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// build compiles the three services and the gateway into BinDir (incremental: seconds when
// nothing changed).
func (p *Platform) build(ctx context.Context) error {
	for _, svc := range programs() {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(p.opts.BinDir, svc), "./services/"+svc+"/cmd/"+svc)
		cmd.Dir = p.opts.Root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w\n%s", svc, err, out)
		}
	}
	return nil
}

// secrets makes the platform's development secrets in DataDir/secrets (pkg/devsetup: the CA and
// every service's identity, the signing key, the Consul ACL, the admin's password), once: they
// live in DataDir, so a restart keeps every token, certificate and password valid.
func (p *Platform) secrets() (*devsetup.Secrets, error) {
	ds, err := devsetup.Write(filepath.Join(p.opts.DataDir, "secrets"), programs(), nil)
	if err != nil {
		return nil, err
	}
	p.PKI, p.ACL = ds.CA, ds.ACL
	return ds, nil
}

// ensureAdmin runs `user admin` on the user database: the admin exists, with its password.
func (p *Platform) ensureAdmin(ctx context.Context, db string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(p.opts.BinDir, "user"), "admin", "-email", p.Admin.Email, "-password-file", p.Admin.File)
	cmd.Env = append(os.Environ(), "DATABASE_URL="+db)
	// Its output holds the password: it is kept out of the platform's log.
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("user admin: %w\n%s", err, strings.ReplaceAll(string(out), p.Admin.Password, "***"))
	}
	return nil
}

func (p *Platform) startConsul(ctx context.Context) error {
	p.ConsulAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p.plan.consul.HTTP))
	// The agent's own data directory, emptied at every start: a dev agent begins with nothing.
	dataDir := filepath.Join(p.opts.DataDir, "consul")
	if err := consul.FreshDataDir(dataDir); err != nil {
		return err
	}
	args := append(consul.DevAgentArgs("meshmart", dataDir, p.plan.consul), "-hcl", p.ACL.AgentConfig())
	agent, err := p.spawn("consul", p.consulBin, args, nil)
	if err != nil {
		return err
	}
	p.consul = agent
	client, err := p.client()
	if err != nil {
		return err
	}
	err = consul.WaitForLeader(ctx, client, 30*time.Second, agent.exited)
	if errors.Is(err, consul.ErrAgentExited) {
		return fmt.Errorf("%w (see its output above); is port %d taken?", err, p.plan.consul.HTTP)
	}
	if err != nil {
		return err
	}
	// The same tokens at every (re)start: the services' token files stay valid.
	if err := consul.ApplyWhenReady(ctx, p.ACL, p.ConsulAddr, 30*time.Second); err != nil {
		return err
	}
	// Services registered before the agent's first sync stay out of the catalog until it runs;
	// a start that waits longer than this goes on anyway (the services register and retry).
	if err := consul.WaitForFirstSync(ctx, client, "meshmart", 10*time.Second); err != nil {
		fmt.Fprintf(p.opts.Out, "consul: %v; starting the services anyway\n", err)
	}
	return nil
}

// DialOptions are the chassis client options a client of the platform needs besides its target:
// TLS verifying that each server is the service asked for (presenting no certificate, as a
// user's client does) and the Consul reader token for consul:// targets.
func (p *Platform) DialOptions() ([]client.Option, error) {
	bundle, err := identity.LoadBundle(p.PKI.TrustDomain(), p.PKI.BundleFile(), slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	return []client.Option{client.WithTrustBundle(bundle, p.PKI.TrustDomain()), client.WithConsulToken(p.ACL.Reader.SecretID)}, nil
}

func (p *Platform) client() (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = p.ConsulAddr
	cfg.Token = p.ACL.Management
	return api.NewClient(cfg)
}

func (p *Platform) startInstance(in *Instance) error {
	proc, err := p.spawn(in.Name, in.bin, nil, in.env)
	if err != nil {
		return err
	}
	in.p = proc
	return nil
}

// Restart stops an instance gracefully and starts it again with the same settings.
func (p *Platform) Restart(in *Instance) error {
	in.p.stop(30 * time.Second)
	return p.startInstance(in)
}

// RestartWith is Restart with changed settings: each of env, KEY=VALUE, replaces the instance's
// setting KEY or is added to them, and the instance keeps them for later restarts. An empty
// VALUE sets the variable empty, which a service reads as unset. It is how a test rolls a new
// setting out replica by replica (a new signing key, say) as a deployment would.
func (p *Platform) RestartWith(in *Instance, env ...string) error {
	for _, kv := range env {
		if !strings.Contains(kv, "=") {
			return fmt.Errorf("platform: restart %s: %q is not KEY=VALUE", in.Name, kv)
		}
	}
	in.env = setEnv(in.env, env...)
	return p.Restart(in)
}

// Env returns the value of the instance's setting key (as the launcher gives it, on top of the
// launcher's own environment), and whether it has one.
func (in *Instance) Env(key string) (string, bool) {
	for _, kv := range slices.Backward(in.env) {
		if k, v, _ := strings.Cut(kv, "="); k == key {
			return v, true
		}
	}
	return "", false
}

// setEnv returns env with each KEY=VALUE of set in place of every entry of KEY: appended, since
// a process given a variable twice reads the last one anyway.
func setEnv(env []string, set ...string) []string {
	out := slices.Clone(env)
	for _, kv := range set {
		key, _, _ := strings.Cut(kv, "=")
		out = slices.DeleteFunc(out, func(e string) bool { return strings.HasPrefix(e, key+"=") })
		out = append(out, kv)
	}
	return out
}

// RestartConsul stops the Consul agent gracefully and starts it again on the same ports. A dev
// agent keeps nothing: every instance has to register again by itself.
func (p *Platform) RestartConsul(ctx context.Context) error {
	p.consul.stop(10 * time.Second)
	return p.startConsul(ctx)
}

// WaitPassing waits until Consul reports every instance passing.
func (p *Platform) WaitPassing(ctx context.Context, within time.Duration) error {
	client, err := p.client()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for {
		missing := p.notPassing(ctx, client)
		if len(missing) == 0 {
			return nil
		}
		select {
		case name := <-p.died:
			return fmt.Errorf("%s exited while waiting for every instance to pass (see its output above)", name)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not passing in Consul after %v: %s", within, strings.Join(missing, ", "))
		}
	}
}

func (p *Platform) notPassing(ctx context.Context, client *api.Client) []string {
	var passing []string
	for _, svc := range programs() {
		addrs, _ := consul.Passing(ctx, client, svc) // an error counts as none passing; the caller polls
		passing = append(passing, addrs...)
	}
	var missing []string
	for _, in := range p.Instances {
		if !slices.Contains(passing, in.Addr) {
			missing = append(missing, in.Name)
		}
	}
	return missing
}

// process is one child process.
type process struct {
	name     string
	cmd      *exec.Cmd
	exited   <-chan struct{}
	mu       sync.Mutex
	stopping bool
}

// spawn starts a child in a process group of its own, so that Ctrl-C reaches only the launcher,
// which stops the children in order; the children die with the launcher (Pdeathsig) even if it
// is killed.
func (p *Platform) spawn(name, bin string, args, env []string) (*process, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	w := p.out.forName(name)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	exited, err := proc.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	pr := &process{name: name, cmd: cmd, exited: exited}
	go func() {
		<-exited
		w.flush()
		pr.mu.Lock()
		stopping := pr.stopping
		pr.mu.Unlock()
		if !stopping {
			select {
			case p.died <- name:
			default:
			}
		}
	}()
	return pr, nil
}

// Signal sends sig to the instance's process, as a fault test would.
func (in *Instance) Signal(sig syscall.Signal) error { return in.p.cmd.Process.Signal(sig) }

// Pid is the instance's process id.
func (in *Instance) Pid() int { return in.p.cmd.Process.Pid }

func (pr *process) stop(grace time.Duration) {
	pr.mu.Lock()
	pr.stopping = true
	pr.mu.Unlock()
	_ = pr.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-pr.exited:
	case <-time.After(grace):
		_ = pr.cmd.Process.Kill()
		<-pr.exited
	}
}

// prefixer writes whole lines from several processes, each prefixed with its process's name.
type prefixer struct {
	mu    sync.Mutex
	w     io.Writer
	width int
}

func (p *prefixer) forName(name string) *lineWriter {
	p.mu.Lock()
	p.width = max(p.width, len(name))
	p.mu.Unlock()
	return &lineWriter{p: p, name: name}
}

// lineWriter buffers a process's output up to each newline.
type lineWriter struct {
	p    *prefixer
	name string
	mu   sync.Mutex
	buf  []byte
}

func (l *lineWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := slices.Index(l.buf, '\n')
		if i < 0 {
			return len(b), nil
		}
		l.emit(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

func (l *lineWriter) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineWriter) emit(line []byte) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	w := bufio.NewWriter(l.p.w)
	fmt.Fprintf(w, "%-*s | %s\n", l.p.width, l.name, line)
	_ = w.Flush()
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
