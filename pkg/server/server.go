// Package server is the chassis' gRPC server runtime: one call builds a production server for a
// service (interceptor chain, health, reflection, keepalive, message limits, TLS, metrics and
// pprof listener) and Run serves it until its context ends, registering it in Consul while it is
// healthy and shutting down gracefully.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"buf.build/go/protovalidate"
	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/observability"
)

// Server is a gRPC server for one meshmart service, built on the chassis.
type Server struct {
	name     string
	cfg      Config
	log      *slog.Logger
	grpc     *grpc.Server
	health   *health.Server
	registry *prometheus.Registry
	lis      net.Listener
	services []string

	// endStreams is cancelled when shutdown reaches the point where long-lived streams must end.
	endStreams context.Context
	stopStream context.CancelFunc
}

// Option configures New.
type Option interface{ apply(*options) }

type options struct {
	lis            net.Listener
	public         map[string]bool
	tracerProvider trace.TracerProvider
	registry       *prometheus.Registry
	extra          []interceptors.Server
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithListener serves on lis instead of listening on Config.GRPCAddr; tests pass a bufconn
// listener. The server closes it.
func WithListener(lis net.Listener) Option { return optionFunc(func(o *options) { o.lis = lis }) }

// WithPublicMethods names full methods ("/meshmart.user.v1.UserService/Login") that need no access
// token. Health checking and reflection are always public.
func WithPublicMethods(methods ...string) Option {
	return optionFunc(func(o *options) {
		for _, m := range methods {
			o.public[m] = true
		}
	})
}

// WithTracerProvider records spans with tp. Without it spans are not recorded.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tracerProvider = tp })
}

// WithRegistry registers the server's metrics in r instead of a registry of its own.
func WithRegistry(r *prometheus.Registry) Option {
	return optionFunc(func(o *options) { o.registry = r })
}

// WithInterceptors appends service-specific interceptors at the end of the chain, right before the
// handler.
func WithInterceptors(s ...interceptors.Server) Option {
	return optionFunc(func(o *options) { o.extra = append(o.extra, s...) })
}

// New builds the server for the service called name (its Consul service name, e.g. "user").
// Register the service implementations with RegisterService, then call Run.
func New(name string, cfg Config, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Config holds addresses, file paths and numbers, never secrets, so all of it is logged.
	log.Info("configured", "service", name, "config", fmt.Sprintf("%+v", cfg))
	o := options{public: map[string]bool{}, tracerProvider: noop.NewTracerProvider()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.registry == nil {
		o.registry = prometheus.NewRegistry()
		o.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s := &Server{name: name, cfg: cfg, log: log, registry: o.registry, lis: o.lis}
	s.endStreams, s.stopStream = context.WithCancel(context.Background())

	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	if err := o.registry.Register(metrics); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("protovalidate: %w", err)
	}

	// The chain, outermost first. Logging and metrics wrap recovery so that a panic is logged and
	// counted as the Internal error it becomes. Authentication runs before rate limiting so that
	// a signed-in user is limited as one client however many addresses they call from, and
	// validation runs last so that only authorised callers learn what a valid request looks like.
	chain := []interceptors.Server{
		interceptors.RequestID(),
		interceptors.Logging(log, interceptors.WithPayloads(cfg.LogPayloads)),
		{Unary: metrics.UnaryServerInterceptor(), Stream: metrics.StreamServerInterceptor()},
		interceptors.Recovery(log),
		s.endStreamsOnShutdown(),
		interceptors.DefaultDeadline(cfg.DefaultDeadline),
	}
	if cfg.AuthPublicKey != "" {
		key, err := auth.LoadPublicKey(cfg.AuthPublicKey)
		if err != nil {
			return nil, err
		}
		verifier, err := auth.NewVerifier(key, cfg.AuthAudience)
		if err != nil {
			return nil, err
		}
		chain = append(chain, interceptors.Authenticate(verifier, log, func(m string) bool { return o.public[m] || alwaysPublic(m) }))
	}
	if cfg.RateLimit > 0 {
		chain = append(chain, interceptors.RateLimit(cfg.RateLimit, cfg.RateBurst))
	}
	chain = append(chain, interceptors.Validate(validator))
	chain = append(chain, o.extra...)

	serverOpts := append(interceptors.ServerChain(chain...),
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(o.tracerProvider),
			otelgrpc.WithPropagators(observability.Propagator()),
		)),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		// Clients may ping every 10s, even with no call open, so idle streams such as
		// TrackOrders stay up through NATs; the server pings idle connections every 30s.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	if cfg.TLSCert != "" {
		creds, err := serverTLS(cfg)
		if err != nil {
			return nil, err
		}
		serverOpts = append(serverOpts, grpc.Creds(creds))
	}
	s.grpc = grpc.NewServer(serverOpts...)
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	reflection.Register(s.grpc) // v1 and v1alpha, so every grpcurl works
	metrics.InitializeMetrics(s.grpc)
	return s, nil
}

// alwaysPublic reports the infrastructure methods that never need a token.
func alwaysPublic(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/grpc.health.v1.Health/") || strings.HasPrefix(fullMethod, "/grpc.reflection.")
}

func serverTLS(cfg Config) (credentials.TransportCredentials, error) {
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.TLSClientCA != "" {
		pem, err := os.ReadFile(cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls client CA %s holds no PEM certificate", cfg.TLSClientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return credentials.NewTLS(tc), nil
}

// RegisterService registers a service implementation, like grpc.Server.RegisterService, and
// reports its health under its full name.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.grpc.RegisterService(desc, impl)
	s.services = append(s.services, desc.ServiceName)
}

// Registry is where the server's metrics live, for services to add their own.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Listen binds the gRPC listener now, so that its address is known before Run; Run calls it when
// nobody did.
func (s *Server) Listen() (net.Addr, error) {
	if s.lis == nil {
		lis, err := net.Listen("tcp", s.cfg.GRPCAddr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", s.cfg.GRPCAddr, err)
		}
		s.lis = lis
	}
	return s.lis.Addr(), nil
}

// Run serves until ctx ends or serving fails, then shuts down gracefully:
//  1. it starts serving and only then reports SERVING and registers in Consul;
//  2. when ctx ends it reports NOT_SERVING, deregisters, waits DrainDelay for clients to
//     re-resolve, tells long-lived streams to end (they fail with Unavailable, so clients
//     reconnect elsewhere), and stops gracefully within ShutdownTimeout, then forcibly.
//
// It returns nil after a shutdown asked for through ctx.
func (s *Server) Run(ctx context.Context) error {
	addr, err := s.Listen()
	if err != nil {
		return err
	}
	var (
		httpSrv  *http.Server
		httpAddr net.Addr
	)
	if s.cfg.HTTPAddr != "" {
		httpSrv, httpAddr, err = s.serveHTTP()
		if err != nil {
			s.lis.Close()
			return err
		}
	}

	// The registrar is built before serving, so a bad advertise address fails before anything
	// is exposed.
	var registrar *consul.Registrar
	if s.cfg.ConsulAddr != "" {
		if registrar, err = s.registrar(addr, httpAddr); err != nil {
			s.lis.Close()
			if httpSrv != nil {
				httpSrv.Close()
			}
			return err
		}
	}

	served := make(chan error, 1)
	go func() { served <- s.grpc.Serve(s.lis) }()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, name := range s.services {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	s.log.InfoContext(ctx, "serving", "service", s.name, "grpc_addr", addr.String(), "tls", s.cfg.TLSCert != "")

	regDone := make(chan struct{})
	regCtx, stopRegistrar := context.WithCancel(context.WithoutCancel(ctx))
	if registrar != nil {
		go func() { defer close(regDone); registrar.Run(regCtx) }()
	} else {
		close(regDone)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}

	// Graceful shutdown; ctx is done, so every step gets a context of its own.
	s.log.Info("shutting down", "service", s.name, "drain_delay", s.cfg.DrainDelay.String())
	s.health.Shutdown()
	stopRegistrar()
	<-regDone
	if registrar != nil {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := registrar.Deregister(dctx); err != nil {
			s.log.Warn("consul deregistration failed", "error", err)
		}
		cancel()
	}
	if serveErr == nil {
		time.Sleep(s.cfg.DrainDelay)
	}
	s.stopStream()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.ShutdownTimeout):
		s.log.Warn("graceful stop timed out; closing remaining connections", "timeout", s.cfg.ShutdownTimeout.String())
		s.grpc.Stop()
		<-stopped
	}
	if httpSrv != nil {
		hctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = httpSrv.Shutdown(hctx)
		cancel()
	}
	if serveErr != nil && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return fmt.Errorf("serve: %w", serveErr)
	}
	s.log.Info("stopped", "service", s.name)
	return nil
}

// registrar registers the gRPC address; the metrics port, when there is an HTTP listener, goes in
// the instance's meta as metrics_port, so that Prometheus' consul_sd finds every instance's
// /metrics from the same catalog (see the compose stack's prometheus.yml).
func (s *Server) registrar(addr, httpAddr net.Addr) (*consul.Registrar, error) {
	advertise := s.cfg.AdvertiseAddr
	if advertise == "" {
		advertise = advertiseFor(addr)
	}
	host, portStr, err := net.SplitHostPort(advertise)
	if err != nil {
		return nil, fmt.Errorf("advertise address %q: %w", advertise, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("advertise port %q: %w", portStr, err)
	}
	meta := map[string]string{"version": observability.BuildVersion()}
	if tcp, ok := httpAddr.(*net.TCPAddr); ok {
		meta["metrics_port"] = strconv.Itoa(tcp.Port)
	}
	return consul.NewRegistrar(s.cfg.ConsulAddr, consul.Registration{
		Name:            s.name,
		Address:         host,
		Port:            port,
		Tags:            s.cfg.Tags,
		Meta:            meta,
		HealthService:   "",
		TLS:             s.cfg.TLSCert != "",
		CheckInterval:   s.cfg.CheckInterval,
		CheckTimeout:    s.cfg.CheckTimeout,
		DeregisterAfter: s.cfg.DeregisterAfter,
	}, s.log)
}

// advertiseFor turns a listener address into one other local processes can dial.
func advertiseFor(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok {
		return addr.String()
	}
	host := tcp.IP.String()
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

func (s *Server) serveHTTP() (*http.Server, net.Addr, error) {
	lis, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", s.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http listener failed", "error", err)
		}
	}()
	s.log.Info("serving metrics", "http_addr", lis.Addr().String(), "pprof", s.cfg.Pprof)
	return srv, lis.Addr(), nil
}

// endStreamsOnShutdown ends long-lived streams when shutdown reaches them: the handler's context
// is cancelled, and a stream that then ends without an error of its own fails with Unavailable,
// telling the client to reconnect to another instance. grpc.Server.GracefulStop alone would wait
// for such streams forever.
func (s *Server) endStreamsOnShutdown() interceptors.Server {
	return interceptors.Server{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			ctx, cancel := context.WithCancel(ss.Context())
			defer cancel()
			stop := context.AfterFunc(s.endStreams, cancel)
			defer stop()
			err := handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
			if s.endStreams.Err() != nil && (err == nil || status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled)) {
				return status.Error(codes.Unavailable, "server is shutting down; reconnect to another instance")
			}
			return err
		},
	}
}

type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }
