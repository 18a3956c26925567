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

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/server"
)

// App runs one service's parts together; see Run.
type App struct {
	log     *slog.Logger
	srv     *server.Server
	workers []part
	closers []part
}

// part is a named worker or closer.
type part struct {
	name string
	run  func(ctx context.Context) error
}

// New returns an App that logs to log. Give it a server with Serve, workers with Go, and
// closers with Defer, then call Run.
func New(log *slog.Logger) *App { return &App{log: log} }

// Serve makes srv the App's gRPC server; its Config also says where the HTTP endpoints listen
// and which Consul agent to register with. Without a server Run runs only workers and closers.
func (a *App) Serve(srv *server.Server) { a.srv = srv }

// Go adds a background worker: run is called when the App starts and must return when its
// context ends, which happens after the server stopped taking new work (NOT_SERVING, out of
// Consul, drained) and before it stops. A worker that returns an error stops the App; one that
// returns nil has just finished.
func (a *App) Go(name string, run func(ctx context.Context) error) {
	a.workers = append(a.workers, part{name, run})
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
//     stops gracefully within Config.ShutdownTimeout, then forcibly;
//  5. the HTTP server shuts down;
//  6. the closers are called, last added first.
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

func (a *App) run(ctx context.Context) error {
	log := a.log
	if a.srv != nil {
		log = log.With("service", a.srv.Name())
	}
	failed := &failure{c: make(chan struct{})}
	var (
		cfg server.Config
		p   prepared
	)
	if a.srv != nil {
		cfg = a.srv.Config()
		var err error
		if p, err = a.prepare(cfg); err != nil {
			return err
		}
	}
	httpSrv, registrar := p.http, p.registrar

	// Start everything.
	var grpcDone, httpDone, regDone sync.WaitGroup
	if a.srv != nil {
		grpcDone.Go(func() {
			if err := a.srv.Serve(); err != nil {
				failed.set(fmt.Errorf("grpc server: %w", err), true)
			}
		})
		a.srv.SetServing()
	}
	if httpSrv != nil {
		httpDone.Go(func() {
			if err := httpSrv.Serve(p.httpLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				failed.set(fmt.Errorf("http server: %w", err), false)
			}
		})
	}
	regCtx, stopRegistrar := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRegistrar()
	if registrar != nil {
		regDone.Go(func() { registrar.Run(regCtx) })
	}
	workCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	var workersDone sync.WaitGroup
	for _, w := range a.workers {
		workersDone.Go(func() {
			if err := w.run(workCtx); err != nil && workCtx.Err() == nil {
				failed.set(fmt.Errorf("%s: %w", w.name, err), false)
			}
		})
	}

	select {
	case <-ctx.Done():
	case <-failed.c:
		log.Error("stopping: a part failed", "error", failed.err)
	}

	// Stop in order; ctx is done, so every step that needs one gets a context of its own.
	log.Info("shutting down", "drain_delay", cfg.DrainDelay.String())
	if a.srv != nil {
		a.srv.SetNotServing()
	}
	stopRegistrar()
	regDone.Wait()
	if registrar != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := registrar.Deregister(dctx); err != nil {
			log.Warn("consul deregistration failed", "error", err)
		}
		cancel()
	}
	if a.srv != nil && !failed.grpc {
		time.Sleep(cfg.DrainDelay)
	}
	stopWorkers()
	workersDone.Wait()
	if a.srv != nil {
		a.srv.GracefulStop(cfg.ShutdownTimeout)
		grpcDone.Wait()
	}
	if httpSrv != nil {
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = httpSrv.Shutdown(hctx)
		cancel()
		httpDone.Wait()
	}
	log.Info("stopped")
	select {
	case <-failed.c:
		return failed.err
	default:
		return nil
	}
}

// prepared is what prepare made.
type prepared struct {
	http      *http.Server
	httpLis   net.Listener
	registrar *consul.Registrar
}

// prepare binds the gRPC and HTTP listeners and builds the registrar before anything is served,
// so that a taken port or a bad advertise address fails before anything is exposed.
func (a *App) prepare(cfg server.Config) (prepared, error) {
	var p prepared
	if _, err := a.srv.Listen(); err != nil {
		return p, err
	}
	var httpAddr net.Addr
	if cfg.HTTPAddr != "" {
		lis, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			return p, errors.Join(fmt.Errorf("listen on %s: %w", cfg.HTTPAddr, err), a.srv.Close())
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
		err = errors.Join(err, a.srv.Close())
		if p.httpLis != nil {
			err = errors.Join(err, p.httpLis.Close())
		}
		return prepared{}, err
	}
	return p, nil
}
