// Package app is the bootstrap kit every meshmart service main uses: one declarative
// configuration (Bind, Table), an application lifecycle (App) that runs the gRPC server, the
// HTTP endpoints, the Consul registrar and background workers together and stops them in order,
// the health probe as a subcommand (Probe), and Main, which puts them together.
//
// The lifecycle takes the simplest of kratos' App (servers plus a registrar) and oklog/run's
// groups (parts that run together; the first to fail stops the rest): a fixed set of parts, since
// every service has the same ones, stopped in the one order a graceful shutdown needs.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/server"
)

// App runs one service's parts together; see Run.
type App struct {
	log     *slog.Logger
	srv     *server.Server
	workers []part
	closers []part
	gates   []gate

	drain     chan struct{} // closed by Drain
	drainOnce sync.Once
}

// gate is something the App waits for before it serves.
type gate struct {
	name  string
	ready <-chan struct{}
}

// part is a named worker or closer.
type part struct {
	name string
	run  func(ctx context.Context) error
}

// New returns an App that logs to log. Give it a server with Serve, workers with Go, and
// closers with Defer, then call Run.
func New(log *slog.Logger) *App { return &App{log: log, drain: make(chan struct{})} }

// Serve makes srv the App's gRPC server; its Config also says where the HTTP endpoints and the
// plaintext health-only server (Config.HealthAddr, see server.Server.HealthServer) listen and
// which Consul agent to register with. Without a server Run runs only workers and closers.
func (a *App) Serve(srv *server.Server) { a.srv = srv }

// Go adds a background worker: run is called when the App starts and must return when its
// context ends, which happens after the server stopped taking new work (NOT_SERVING, out of
// Consul, drained) and before it stops. A worker that returns an error stops the App; one that
// returns nil has just finished.
func (a *App) Go(name string, run func(ctx context.Context) error) {
	a.workers = append(a.workers, part{name, run})
}

// ReadyWhen holds the App back from serving until ready is closed: the server answers health
// checks with NOT_SERVING and the instance stays out of Consul meanwhile, while the workers run
// (one of them is usually what closes ready: the token keys' first fetch). Without gates the
// workers start on a serving App. name says what it waits for, in the log.
func (a *App) ReadyWhen(name string, ready <-chan struct{}) {
	a.gates = append(a.gates, gate{name, ready})
}

// Defer adds a closer (a database, a client connection, a tracer), called after everything else
// stopped; closers are called in the reverse order of Defer, whether or not Run got to serve.
func (a *App) Defer(name string, close func() error) {
	a.closers = append(a.closers, part{name, func(context.Context) error { return close() }})
}

// Run runs the App until ctx ends or a part fails, then stops it in order:
//  1. the gRPC server reports NOT_SERVING and the instance leaves Consul;
//  2. the server keeps serving for Config.DrainDelay, so that clients re-resolve;
//  3. the workers' context ends and Run waits for them;
//  4. long-lived streams end (with Unavailable, so clients reconnect elsewhere) and the server
//     stops gracefully within Config.ShutdownTimeout, then forcibly; then the health-only server
//     stops;
//  5. the HTTP server shuts down;
//  6. the closers are called, last added first.
//
// Drain does step 1 ahead of time; the drain delay of step 2 then counts from that moment.
//
// It returns nil after a shutdown asked for through ctx, else the first part's error.
func (a *App) Run(ctx context.Context) error {
	return errors.Join(a.run(ctx), a.close())
}

// close calls the closers, last added first, and reports their errors.
func (a *App) close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		c := a.closers[i]
		if err := c.run(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

// failure is the first part to fail.
type failure struct {
	once sync.Once
	c    chan struct{}
	err  error
	grpc bool // the gRPC server itself failed: there is nothing to drain
}

func (f *failure) set(err error, grpc bool) {
	f.once.Do(func() { f.err, f.grpc = err, grpc; close(f.c) })
}

// happened reports whether a part failed so far; only then may err and grpc be read.
func (f *failure) happened() bool {
	select {
	case <-f.c:
		return true
	default:
		return false
	}
}

// running is a started App: what its stop needs.
type running struct {
	log                   *slog.Logger
	srv                   *server.Server // nil: workers only
	cfg                   server.Config
	p                     prepared
	failed                *failure
	stopRegistrar         context.CancelFunc
	stopWorkers           context.CancelFunc
	grpc, http, reg, work sync.WaitGroup
	// settled is closed by stop; the trim of a settled service waits for it or for SettleTime.
	settled chan struct{}
	trim    sync.WaitGroup

	// registered is set once the registrar runs; leftAt once the instance left rotation (leave).
	registered bool
	leftAt     time.Time
}

func (a *App) run(ctx context.Context) error {
	r, err := a.start(ctx)
	if err != nil {
		return err
	}
	// Started: what start-up alone needed is given back, and again once the service settled,
	// since its first seconds of serving are start-up too: the TLS handshakes with its peers,
	// the first fetch of the token keys, the Consul registration, the workers' first passes.
	r.settled = make(chan struct{})
	r.trim.Go(func() {
		trimStartup(r.log)
		select {
		case <-time.After(SettleTime):
			trimStartup(r.log)
		case <-r.settled:
		}
	})
	// A drain only takes the instance out of rotation: the App runs on until ctx ends.
	drain := a.drain
	for stopping := false; !stopping; {
		select {
		case <-ctx.Done():
			stopping = true
		case <-r.failed.c:
			r.log.Error("stopping: a part failed", "error", r.failed.err)
			stopping = true
		case <-drain:
			r.log.Info("draining: out of Consul and NOT_SERVING, still serving calls until stopped")
			r.leave()
			drain = nil
		}
	}
	r.stop()
	if r.failed.happened() {
		return r.failed.err
	}
	return nil
}

// start binds the listeners, starts the gRPC and HTTP servers, reports SERVING, starts the
// registrar and the workers. With ReadyWhen gates, the workers start first and SERVING and the
// registrar wait until every gate is open.
func (a *App) start(ctx context.Context) (*running, error) {
	r := &running{log: a.log, srv: a.srv, failed: &failure{c: make(chan struct{})}}
	if a.srv != nil {
		r.log = r.log.With("service", a.srv.Name())
		r.cfg = a.srv.Config()
		var err error
		if r.p, err = a.prepare(r.cfg); err != nil {
			return nil, err
		}
		r.grpc.Go(func() {
			if err := a.srv.Serve(); err != nil {
				r.failed.set(fmt.Errorf("grpc server: %w", err), true)
			}
		})
		if r.p.health != nil {
			r.grpc.Go(func() {
				if err := r.p.health.Serve(r.p.healthLis); err != nil {
					r.failed.set(fmt.Errorf("health server: %w", err), false)
				}
			})
		}
	}
	if r.p.http != nil {
		r.http.Go(func() {
			if err := r.p.http.Serve(r.p.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				r.failed.set(fmt.Errorf("http server: %w", err), false)
			}
		})
	}
	// The registrar and the workers outlive ctx: the stop ends them, each in its turn.
	var regCtx, workCtx context.Context
	regCtx, r.stopRegistrar = context.WithCancel(context.WithoutCancel(ctx))
	workCtx, r.stopWorkers = context.WithCancel(context.WithoutCancel(ctx))
	serve := func() {
		select {
		case <-a.drain:
			return // drained before it served: it must never register (run's loop leaves)
		default:
		}
		if a.srv != nil {
			a.srv.SetServing()
		}
		if r.p.registrar != nil {
			r.registered = true
			r.reg.Go(func() { r.p.registrar.Run(regCtx) })
		}
	}
	if len(a.gates) == 0 {
		serve() // workers start on a serving App
	}
	for _, w := range a.workers {
		r.work.Go(func() {
			if err := w.run(workCtx); err != nil && workCtx.Err() == nil {
				r.failed.set(fmt.Errorf("%s: %w", w.name, err), false)
			}
		})
	}
	if len(a.gates) == 0 {
		return r, nil
	}
	// The workers run first: one of them is what opens the gates (the token keys' first fetch).
	for _, g := range a.gates {
		select {
		case <-g.ready:
			continue
		default:
		}
		r.log.Info("waiting before serving", "for", g.name)
		select {
		case <-g.ready:
		case <-ctx.Done():
			return r, nil
		case <-r.failed.c:
			return r, nil
		case <-a.drain:
			return r, nil // it will not serve: run's loop leaves
		}
	}
	serve()
	return r, nil
}

// leave takes the instance out of rotation, for good, while it keeps serving: NOT_SERVING, the
// registrar stopped (so that it cannot register the instance again), out of Consul. It does so
// once; a later call does nothing.
func (r *running) leave() {
	if !r.leftAt.IsZero() {
		return
	}
	if r.srv != nil {
		r.srv.SetNotServing()
	}
	r.stopRegistrar()
	r.reg.Wait()
	if r.registered {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := r.p.registrar.Deregister(ctx); err != nil {
			r.log.Warn("consul deregistration failed", "error", err)
		}
		cancel()
	}
	r.leftAt = time.Now()
}

// stop stops a started App in the order Run describes; every step that needs a context gets
// one of its own, since the App's is done. After a drain it waits only what is left of the drain
// delay.
func (r *running) stop() {
	r.log.Info("shutting down", "drain_delay", r.cfg.DrainDelay.String(), "drained_before", !r.leftAt.IsZero())
	if r.settled != nil {
		close(r.settled)
		r.trim.Wait()
	}
	r.leave()
	if r.srv != nil && !(r.failed.happened() && r.failed.grpc) {
		time.Sleep(r.cfg.DrainDelay - time.Since(r.leftAt)) // nothing left after a drain that long ago
	}
	r.stopWorkers()
	r.work.Wait()
	if r.srv != nil {
		r.srv.GracefulStop(r.cfg.ShutdownTimeout)
		if r.p.health != nil {
			// Health calls are short and Watch streams never end by themselves: no grace.
			r.p.health.Stop()
		}
		r.grpc.Wait()
	}
	if r.p.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = r.p.http.Shutdown(ctx)
		cancel()
		r.http.Wait()
	}
	r.log.Info("stopped")
}

// prepared is what prepare made.
type prepared struct {
	http      *http.Server
	httpLis   net.Listener
	health    *grpc.Server // the health-only server, when Config.HealthAddr is set
	healthLis net.Listener
	registrar *consul.Registrar
}

// prepare binds the gRPC, health and HTTP listeners and builds the registrar before anything is
// served, so that a taken port or a bad advertise address fails before anything is exposed.
func (a *App) prepare(cfg server.Config) (prepared, error) {
	var p prepared
	if _, err := a.srv.Listen(); err != nil {
		return p, err
	}
	// fail releases what was bound so far.
	fail := func(err error) (prepared, error) {
		err = errors.Join(err, a.srv.Close())
		for _, lis := range []net.Listener{p.healthLis, p.httpLis} {
			if lis != nil {
				err = errors.Join(err, lis.Close())
			}
		}
		return prepared{}, err
	}
	if cfg.HealthAddr != "" {
		lis, err := net.Listen("tcp", cfg.HealthAddr)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", cfg.HealthAddr, err))
		}
		p.health, p.healthLis = a.srv.HealthServer(), lis
		a.log.Info("serving health without TLS, for probes only", "health_addr", lis.Addr().String())
	}
	var httpAddr net.Addr
	if cfg.HTTPAddr != "" {
		lis, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return fail(fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err))
		}
		httpAddr, p.httpLis = lis.Addr(), lis
		p.http = &http.Server{Handler: a.srv.HTTPHandler(), ReadHeaderTimeout: 5 * time.Second}
		a.log.Info("serving metrics", "http_addr", httpAddr.String(), "pprof", cfg.Pprof)
	}
	if cfg.ConsulAddr == "" {
		return p, nil
	}
	reg, err := a.srv.Registration(httpAddr)
	if err == nil {
		p.registrar, err = consul.NewRegistrar(cfg.ConsulAddr, reg, a.log)
	}
	if err != nil {
		return fail(err)
	}
	return p, nil
}
