package app

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
)

// Service describes a service binary to Main.
type Service struct {
	// Name is the service's name in Consul, in traces and in error messages ("order").
	Name string
	// GRPCAddr is the default gRPC listen address (":50052").
	GRPCAddr string
	// Settings points to a struct of the service's own settings, tagged as Bind describes; they
	// share one flag set with the chassis' server.Config. Nil means none.
	Settings any
	// Start wires the service once its settings are parsed: it opens what the service needs
	// (handing each closer to Setup.Defer), adds workers with Setup.Go and serves with
	// Setup.Serve. Run runs the result.
	Start func(ctx context.Context, s *Setup) error
	// Commands are subcommands besides the chassis' own (ProbeCommand, DrainCommand and, with
	// Migrate, MigrateCommand), such as the user service's keygen.
	Commands []Command
	// Migrate applies the service's schema migrations to the database its Settings name, once
	// they are bound, and returns the names of those it applied: none when the schema is up to
	// date. Set, it gives the binary MigrateCommand. Nil: the service keeps no database.
	Migrate func(ctx context.Context) (applied []string, err error)
	// OwnVerifier says that the service verifies access tokens with keys of its own, by giving
	// Setup.Serve a server.WithVerifier: the user service, which signs them and publishes the
	// keys. Every other service refuses to start without -auth-keys-target or -auth-public-key.
	OwnVerifier bool
	// Edge says the program serves no business service of its own and verifies no access token
	// itself: it forwards each caller's token to the services, which verify it (the gateway). It
	// needs neither -auth-keys-target nor -auth-public-key, and Start serves with
	// Setup.ServeChassis. Given -auth-keys-target it still fetches the keys, and so reports
	// SERVING only once the user service answered.
	Edge bool
}

// Command is a subcommand: `<service> <Name> args...` runs Run with the args.
type Command struct {
	Name string
	Run  func(ctx context.Context, args []string) error
}

// Setup is what Service.Start wires a service with: the App to add workers and closers to, and
// what the kit made from the chassis settings.
type Setup struct {
	*App
	// Log is the service's logger, as -log-level and -log-format configure it.
	Log *slog.Logger
	// Config is the chassis' settings, parsed and valid.
	Config server.Config
	// Tracer records the service's spans; Run shuts it down last.
	Tracer trace.TracerProvider
	// Identity is the service's SPIFFE identity (Config.Identity), which its server presents and
	// its clients (Dial) prove themselves with; nil with -insecure-plaintext.
	Identity identity.Source
	// Registry holds the service's metrics, served on its /metrics: the Go runtime's and the
	// process', the server's (Serve), the clients' (Dial: calls, retries, breaker state), and
	// whatever the service adds (its database pool, its domain counts).
	Registry *prometheus.Registry

	name string
	// verifier checks tokens with the keys fetched from Config.AuthKeysTarget; nil without it.
	verifier *auth.Verifier
}

// errAuthRequired is the one place that says a service cannot run without authentication.
var errAuthRequired = errors.New("-auth-keys-target (MESHMART_AUTH_KEYS_TARGET) or -auth-public-key (MESHMART_AUTH_PUBLIC_KEY) is required: every call acts for a signed-in user")

// checkAuth reports a service that would verify no access token, or that was told two ways.
func checkAuth(svc Service, cfg server.Config) error {
	switch {
	case svc.OwnVerifier:
		return nil
	case cfg.AuthKeysTarget != "" && cfg.AuthPublicKey != "":
		return errors.New("set -auth-keys-target (MESHMART_AUTH_KEYS_TARGET) or -auth-public-key (MESHMART_AUTH_PUBLIC_KEY), not both")
	case svc.Edge:
		return nil
	case cfg.AuthKeysTarget == "" && cfg.AuthPublicKey == "":
		return errAuthRequired
	}
	return nil
}

// Serve builds the service's gRPC server (traced with Tracer), registers impl as desc's service
// and makes it the App's server. A server that would check no access token is refused: give
// -auth-keys-target, -auth-public-key or, with Service.OwnVerifier, server.WithVerifier; so is a
// service with a method whose contract does not declare who may call it (see
// server.Server.RegisterService).
func (s *Setup) Serve(desc *grpc.ServiceDesc, impl any, opts ...server.Option) error {
	srv, err := s.newServer(opts)
	if err != nil {
		return err
	}
	if !srv.Authenticates() {
		return errAuthRequired
	}
	if err := srv.RegisterService(desc, impl); err != nil {
		return err
	}
	s.App.Serve(srv)
	return nil
}

// errChassisServices is ServeChassis' refusal of a business service, which only Serve may register.
var errChassisServices = errors.New("ServeChassis serves health and reflection only: register services with Setup.Serve")

// ServeChassis makes the App's server a chassis server that registers no service of its own:
// health checking, reflection, metrics, Consul registration and the graceful stop, for a program
// whose real work is elsewhere (the gateway, which serves HTTP with Setup.Go and calls the
// services with Dial). Since health and reflection are open to anyone, no access token is
// required; opts that register a service (server.WithService) are refused, so that nothing
// callable escapes the authentication Serve insists on.
func (s *Setup) ServeChassis(opts ...server.Option) error {
	srv, err := s.newServer(opts)
	if err != nil {
		return err
	}
	if len(srv.Services()) > 0 {
		return errors.Join(errChassisServices, srv.Close())
	}
	s.App.Serve(srv)
	return nil
}

// newServer builds the service's chassis server: traced with Tracer, its metrics in Registry,
// presenting Identity, with the verifier of the fetched token keys if any, then opts.
func (s *Setup) newServer(opts []server.Option) (*server.Server, error) {
	chassis := []server.Option{server.WithTracerProvider(s.Tracer), server.WithRegistry(s.Registry)}
	if s.Identity != nil {
		chassis = append(chassis, server.WithIdentity(s.Identity))
	}
	if s.verifier != nil {
		chassis = append(chassis, server.WithVerifier(s.verifier))
	}
	return server.New(s.name, s.Config, s.Log, append(chassis, opts...)...)
}

// Dial connects to another service at target with the chassis client (pkg/client): over mutual
// TLS with the service's own identity, traced, its metrics in Registry, the connection closed
// when the App stops. The
// server must prove to be the service target names (client.WithServer for a target that names
// none). With -insecure-plaintext it dials in plaintext.
func (s *Setup) Dial(target string, opts ...client.Option) (*grpc.ClientConn, error) {
	chassis := []client.Option{client.WithTracerProvider(s.Tracer), client.WithRegistry(s.Registry)}
	if s.Identity != nil {
		chassis = append(chassis, client.WithIdentity(s.Identity))
	} else {
		chassis = append(chassis, client.WithInsecure())
	}
	cc, err := client.Dial(target, s.Log, append(chassis, opts...)...)
	if err != nil {
		return nil, err
	}
	s.Defer("connection to "+target, cc.Close)
	return cc, nil
}

// ObserveDB exports db's connection pool on the service's /metrics (go_sql_* with db_name the
// service's name: open, in use and idle connections, waits for one and their time), which the
// dashboards show beside the calls: a pool at its limit makes every call wait.
func (s *Setup) ObserveDB(db *sql.DB) error {
	if err := s.Registry.Register(collectors.NewDBStatsCollector(db, s.name)); err != nil {
		return fmt.Errorf("register the database pool's metrics: %w", err)
	}
	return nil
}

// Main runs svc as the process' main with os.Args and the environment until SIGINT or SIGTERM,
// and returns the exit code, so that a service's main is `os.Exit(app.Main(svc))`: 0 on a clean
// stop (or -h), 1 after an error, which it prints to stderr. DrainSignal drains the service (see
// App.Drain and DrainCommand).
func Main(svc Service) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Caught from the start: a drain asked for while the service starts must not kill it.
	drain := make(chan os.Signal, 1)
	signal.Notify(drain, DrainSignal)
	defer signal.Stop(drain)
	err := run(ctx, svc, os.Args[1:], os.Getenv, drain)
	switch {
	case err == nil || errors.Is(err, flag.ErrHelp):
		return 0
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", commandName(svc, os.Args[1:]), err)
		return 1
	}
}

// commandName is how errors name what ran: "order", or "order healthcheck".
func commandName(svc Service, args []string) string {
	if len(args) == 0 {
		return svc.Name
	}
	if args[0] == ProbeCommand || args[0] == DrainCommand || (args[0] == MigrateCommand && svc.Migrate != nil) {
		return svc.Name + " " + args[0]
	}
	for _, c := range svc.Commands {
		if c.Name == args[0] {
			return svc.Name + " " + c.Name
		}
	}
	return svc.Name
}

// Run is Main without the process: args are the arguments after the program name and getenv
// reads the environment. A first argument naming ProbeCommand, DrainCommand, MigrateCommand (for
// a service with Migrate) or one of svc.Commands runs that subcommand. Otherwise it binds the
// chassis' and the service's settings to one flag set (default < environment < flag), checks
// them, builds the logger, logs every setting in one line (secrets masked) and the tracer, calls
// svc.Start and runs the App until ctx ends. Unlike Main, it leaves DrainSignal alone.
func Run(ctx context.Context, svc Service, args []string, getenv func(string) string) error {
	return run(ctx, svc, args, getenv, nil)
}

// run is Run, with the channel DrainSignal arrives on (nil: none).
func run(ctx context.Context, svc Service, args []string, getenv func(string) string, drain <-chan os.Signal) error {
	if len(args) > 0 {
		switch {
		case args[0] == ProbeCommand:
			return Probe(ctx, svc.GRPCAddr, args[1:], getenv)
		case args[0] == DrainCommand:
			return Drain(ctx, args[1:], getenv)
		case args[0] == MigrateCommand && svc.Migrate != nil:
			return migrate(ctx, svc, args[1:], getenv)
		}
		for _, c := range svc.Commands {
			if c.Name == args[0] {
				return c.Run(ctx, args[1:])
			}
		}
	}
	cfg := server.DefaultConfig(svc.GRPCAddr)
	cfgs := []any{&cfg}
	if svc.Settings != nil {
		cfgs = append(cfgs, svc.Settings)
	}
	fs := flag.NewFlagSet(svc.Name, flag.ContinueOnError)
	settings, err := Bind(fs, getenv, cfgs...)
	if err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		// A mistyped subcommand, or `migrate` given to a binary without one, must not start a
		// server where a one-shot was meant (a Kubernetes Job would then never end).
		return fmt.Errorf("unknown subcommand or stray argument %q", fs.Arg(0))
	}
	if err := errors.Join(checkAuth(svc, cfg), settings.Check(), cfg.Validate()); err != nil {
		return err
	}
	log, err := observability.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	log.Info("configured", "service", svc.Name, "version", observability.BuildVersion(), "settings", settings)
	tp, shutdownTracing, err := observability.NewTracerProvider(ctx, svc.Name, observability.BuildVersion())
	if err != nil {
		return err
	}
	a := New(log)
	if drain != nil {
		a.DrainOn(drain)
	}
	a.Defer("tracer", func() error { shutdownTracing(); return nil })
	id, closeID, err := cfg.Identity(ctx, log)
	if err != nil {
		return errors.Join(err, a.close())
	}
	a.Defer("identity", closeID)
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	setup := &Setup{App: a, Log: log, Config: cfg, Tracer: tp, Identity: id, Registry: registry, name: svc.Name}
	if !svc.OwnVerifier && cfg.AuthKeysTarget != "" {
		if err := setup.fetchTokenKeys(); err != nil {
			return errors.Join(err, a.close())
		}
	}
	if err := svc.Start(ctx, setup); err != nil {
		return errors.Join(err, a.close())
	}
	return a.Run(ctx)
}
