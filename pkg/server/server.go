// Package server builds the chassis' gRPC server for a service: interceptor chain, health,
// reflection, keepalive, message limits, TLS, and the metrics and pprof handler. It provides the
// steps of a server's life (Serve, SetServing, SetNotServing, GracefulStop, Registration);
// pkg/app runs them together with the HTTP listener, the Consul registrar and background workers,
// and stops them in order.
package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"slices"
	"strconv"
	"time"

	"buf.build/go/protovalidate"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	"github.com/meshmart/meshmart/pkg/authz"
	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/identity"
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
	authn    bool
	tls      bool
	policies *authz.Table
	// unhandled logs and counts the calls the chain never sees.
	unhandled *unhandled

	// endStreams is cancelled when shutdown reaches the point where long-lived streams must end.
	endStreams context.Context
	stopStream context.CancelFunc
}

// Option configures New.
type Option interface{ apply(*options) }

// streamWorkers is how many long-lived goroutines serve calls (grpc.NumStreamWorkers). Without
// them grpc-go starts a goroutine per call, whose stack starts small: the chain's depth made it
// grow and be copied on every call (runtime.copystack, 5–8 % of the process's CPU in
// BenchmarkChassis' profile). A worker's stack has grown already. A call that finds every
// worker busy gets a goroutine of its own as before, so a long stream never holds one back;
// the workers only need to outnumber the calls a busy server runs at once. The chassis' server
// CPU per call under 16 concurrent callers: 1.5–9 % less than with none, and no change with
// GOMAXPROCS workers (2 here: busy calls found none free); BENCHMARKS.md, "Stream workers".
// grpc-go marks the option experimental.
const streamWorkers = 64

type options struct {
	lis            net.Listener
	peerService    func(ctx context.Context) string
	tracerProvider trace.TracerProvider
	registry       *prometheus.Registry
	extra          []interceptors.Server
	verifier       *auth.Verifier
	identity       identity.Source
	services       []service
}

type service struct {
	desc *grpc.ServiceDesc
	impl any
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithListener serves on lis instead of listening on Config.GRPCAddr; tests pass a bufconn
// listener. The server closes it.
func WithListener(lis net.Listener) Option { return optionFunc(func(o *options) { o.lis = lis }) }

// WithPeerService replaces how the server learns which meshmart service the connection of a call
// proved to be, which a policy's `services` list is checked against. The default,
// identity.PeerService, reads the verified client certificate of the mutual-TLS connection; a nil
// f makes no caller a service. Services never set it; in-process tests over bufconn may.
func WithPeerService(f func(ctx context.Context) string) Option {
	return optionFunc(func(o *options) { o.peerService = f })
}

// WithVerifier checks access tokens with v instead of the key file Config.AuthPublicKey names:
// the user service verifies its own tokens with the keys it publishes this way, and pkg/app
// passes the verifier whose keys it fetches from Config.AuthKeysTarget.
func WithVerifier(v *auth.Verifier) Option {
	return optionFunc(func(o *options) { o.verifier = v })
}

// WithIdentity serves TLS with src's identity instead of opening the one Config names (see
// Config.Identity); pkg/app opens it once and shares it between the server and the clients a
// service dials.
func WithIdentity(src identity.Source) Option {
	return optionFunc(func(o *options) { o.identity = src })
}

// WithTracerProvider records spans with tp. Without it, or with a noop.TracerProvider (what
// observability.NewTracerProvider returns when nothing is exported), no span is started: the
// server only continues the W3C trace context a caller sent, so its trace id is logged and
// forwarded.
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

// WithService registers one more service implementation in New, as RegisterService would: a
// process that serves two contracts (the order service's OrderService and CatalogService) passes
// the second this way through pkg/app's Setup.Serve. New fails as RegisterService does.
func WithService(desc *grpc.ServiceDesc, impl any) Option {
	return optionFunc(func(o *options) { o.services = append(o.services, service{desc, impl}) })
}

// New builds the server for the service called name (its Consul service name, e.g. "user").
// Register the service implementations with RegisterService, then run it with pkg/app.
func New(name string, cfg Config, log *slog.Logger, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{peerService: identity.PeerService, tracerProvider: noop.NewTracerProvider()}
	for _, opt := range opts {
		opt.apply(&o)
	}
	if o.registry == nil {
		o.registry = prometheus.NewRegistry()
		o.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s := &Server{name: name, cfg: cfg, log: log, registry: o.registry, lis: o.lis, policies: authz.NewTable()}
	s.endStreams, s.stopStream = context.WithCancel(context.Background())

	metrics := interceptors.NewServerMetrics()
	if err := o.registry.Register(metrics); err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("protovalidate: %w", err)
	}

	// The chain, outermost first. The per-address limit comes before everything, so that what
	// it refuses costs no token check and no log line. Logging and metrics wrap recovery so that
	// a panic is logged and counted as the Internal error it becomes. Identification runs before
	// the per-client rate limit so that a signed-in user is limited as one client however many
	// addresses they call from. Rate limiting runs before authorization so that a client hammering methods it may not call is
	// still limited, and authorization runs before validation so that only callers the contract
	// admits learn what a valid request looks like.
	rejected, err := newUnhandled(log, o.registry)
	if err != nil {
		return nil, fmt.Errorf("register metrics: %w", err)
	}
	// The gate goes first: a call of a method nobody serves is answered, logged and counted
	// there, as grpc-go would have answered it, before it costs anything else (see unhandled).
	chain := []interceptors.Server{rejected.gate()}
	// The address of a call is its peer's, or the client a trusted forwarder (the gateway, by
	// its verified certificate, known from the handshake) names: available before any token is
	// looked at.
	clientAddr := interceptors.ClientAddress(o.peerService, cfg.TrustedForwarders)
	if cfg.AddressRateLimit > 0 {
		// First of all, before a token is looked at or a line logged: a flood from one address
		// (bad tokens, logins) is refused for the price of a map lookup (see AddressRateLimit).
		refused := prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meshmart_server_address_limited_total",
			Help: "Calls refused by the per-address rate limit, before authentication.",
		})
		if err := o.registry.Register(refused); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
		chain = append(chain, interceptors.AddressRateLimit(cfg.AddressRateLimit, cfg.AddressRateBurst, clientAddr, log, refused))
	}
	chain = append(chain,
		interceptors.RequestID(),
		interceptors.Logging(log, interceptors.WithPayloads(cfg.LogPayloads), interceptors.WithSampling(cfg.LogSample, cfg.LogSlow)),
		metrics.Server(),
		interceptors.Recovery(log),
		s.endStreamsOnShutdown(),
		interceptors.DefaultDeadline(cfg.DefaultDeadline),
	)
	if o.verifier == nil && cfg.AuthPublicKey != "" {
		key, err := auth.LoadPublicKey(cfg.AuthPublicKey)
		if err != nil {
			return nil, err
		}
		if o.verifier, err = auth.NewVerifier([]ed25519.PublicKey{key}, cfg.AuthOptions()...); err != nil {
			return nil, err
		}
	}
	if o.verifier != nil {
		s.authn = true
		chain = append(chain, interceptors.Identify(o.verifier, relayedAsNoService(o.peerService, cfg.TrustedForwarders), log))
	}
	if cfg.RateLimit > 0 {
		chain = append(chain, interceptors.RateLimit(cfg.RateLimit, cfg.RateBurst, clientAddr))
	}
	if s.authn && cfg.StreamsPerUser > 0 {
		chain = append(chain, streamsPerUser(cfg.StreamsPerUser))
	}
	if s.authn {
		// Authorization needs identification: without a verifier (tests only; pkg/app refuses to
		// run a service so) nobody could be identified, so nothing is authorized either.
		chain = append(chain, s.policies.Interceptor())
	}
	chain = append(chain, interceptors.Validate(validator))
	chain = append(chain, o.extra...)

	// Tracing's options first: without an exporter they are an interceptor, which must be the
	// outermost so that the request id and the log line see the caller's trace.
	serverOpts := append(Tracing(o.tracerProvider), interceptors.ServerChain(chain...)...)
	serverOpts = append(serverOpts,
		grpc.UnknownServiceHandler(unknownMethod),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		grpc.MaxConcurrentStreams(uint32(cfg.MaxConcurrentStreams)),
		// Clients may ping every 10s, even with no call open, so idle streams such as
		// TrackOrders stay up through NATs; the server pings idle connections every 30s.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	)
	if o.identity == nil && !cfg.InsecurePlaintext {
		if cfg.SPIFFESocket != "" {
			return nil, errors.New("server: the SPIFFE Workload API source must be opened by the caller: use Config.Identity and WithIdentity")
		}
		if o.identity, _, err = cfg.Identity(context.Background(), log); err != nil {
			return nil, err
		}
	}
	if o.identity != nil {
		tc, err := identity.ServerConfig(o.identity)
		if err != nil {
			return nil, err
		}
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(tc)))
		s.tls = true
	}
	s.grpc = grpc.NewServer(serverOpts...)
	s.unhandled = rejected
	s.health = health.NewServer()
	// Not serving until SetServing: grpc's health server starts out SERVING.
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	s.grpc.RegisterService(rejected.wrap(&healthpb.Health_ServiceDesc), s.health)
	for _, svc := range o.services {
		if err := s.RegisterService(svc.desc, svc.impl); err != nil {
			return nil, err
		}
	}
	reflection.Register(s.grpc) // v1 and v1alpha, so every grpcurl works
	metrics.InitializeMetrics(s.grpc)
	return s, nil
}

// Identity opens the identity c gives the service: the TLS files, watched for changes, or the
// SPIFFE Workload API; with InsecurePlaintext it returns a nil Source. Call close when done.
func (c Config) Identity(ctx context.Context, log *slog.Logger) (_ identity.Source, close func() error, _ error) {
	switch {
	case c.InsecurePlaintext:
		return nil, func() error { return nil }, nil
	case c.SPIFFESocket != "":
		src, err := identity.WorkloadAPI(ctx, c.SPIFFESocket)
		if err != nil {
			return nil, nil, err
		}
		return src, src.Close, nil
	case c.TLSCert != "":
		src, err := identity.LoadFiles(c.TLSCert, c.TLSKey, c.TLSCA, log)
		if err != nil {
			return nil, nil, err
		}
		return src, src.Close, nil
	}
	return nil, nil, ErrNoTLS
}

// RegisterService registers a service implementation, like grpc.Server.RegisterService, and
// reports its health under its full name. Who may call each method is read from the service's
// protobuf descriptor (its linked generated code): a service with a method that declares no
// (meshmart.authz.v1.policy), or whose descriptor is not linked in, is refused with an error, so
// that no method is ever served without saying who may call it. Register before serving.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) error {
	if err := s.policies.AddService(desc.ServiceName); err != nil {
		return err
	}
	s.grpc.RegisterService(s.unhandled.wrap(desc), impl)
	s.services = append(s.services, desc.ServiceName)
	return nil
}

// Services are the full names of the services registered with RegisterService or WithService,
// in the order they were; health and reflection are not among them.
func (s *Server) Services() []string { return slices.Clone(s.services) }

// Registry is where the server's metrics live, for services to add their own.
func (s *Server) Registry() *prometheus.Registry { return s.registry }

// Listen binds the gRPC listener now, so that its address is known before serving; Serve and
// Registration call it when nobody did.
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

// Name is the service's name, as registered in Consul.
func (s *Server) Name() string { return s.name }

// Config is the configuration the server was built with.
func (s *Server) Config() Config { return s.cfg }

// Authenticates reports whether the server checks access tokens (WithVerifier or
// Config.AuthPublicKey), and so identifies callers and enforces the methods' declared policies.
func (s *Server) Authenticates() bool { return s.authn }

// Serve serves on the listener (see Listen) until GracefulStop, after which it returns nil, or
// until serving fails.
func (s *Server) Serve() error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	s.unhandled.serving(s.grpc)
	s.log.Info("serving", "service", s.name, "grpc_addr", s.lis.Addr().String(), "tls", s.tls)
	if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Close releases the listener of a server that never served.
func (s *Server) Close() error {
	if s.lis == nil {
		return nil
	}
	return s.lis.Close()
}

// SetServing reports SERVING for the server as a whole and for every registered service.
func (s *Server) SetServing() {
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, name := range s.services {
		s.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
}

// SetNotServing reports NOT_SERVING for everything, for good: the first step of a shutdown.
func (s *Server) SetNotServing() { s.health.Shutdown() }

// GracefulStop tells long-lived streams to end (they fail with Unavailable, so clients
// reconnect elsewhere) and stops gracefully within timeout, then forcibly.
func (s *Server) GracefulStop(timeout time.Duration) {
	s.stopStream()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(timeout):
		s.log.Warn("graceful stop timed out; closing remaining connections", "timeout", timeout.String())
		s.grpc.Stop()
		<-stopped
	}
}

// Registration is the instance's Consul registration: the advertised gRPC address (see Listen);
// the metrics port, when httpAddr is not nil, goes in the instance's meta as metrics_port, so
// that Prometheus' consul_sd finds every instance's /metrics from the same catalog (see the
// compose stack's prometheus.yml).
func (s *Server) Registration(httpAddr net.Addr) (consul.Registration, error) {
	addr, err := s.Listen()
	if err != nil {
		return consul.Registration{}, err
	}
	advertise := s.cfg.AdvertiseAddr
	if advertise == "" {
		advertise = advertiseFor(addr)
	}
	host, portStr, err := net.SplitHostPort(advertise)
	if err != nil {
		return consul.Registration{}, fmt.Errorf("advertise address %q: %w", advertise, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return consul.Registration{}, fmt.Errorf("advertise port %q: %w", portStr, err)
	}
	meta := map[string]string{"version": observability.BuildVersion()}
	if tcp, ok := httpAddr.(*net.TCPAddr); ok {
		meta["metrics_port"] = strconv.Itoa(tcp.Port)
	}
	return consul.Registration{
		Name:            s.name,
		Address:         host,
		Port:            port,
		Tags:            s.cfg.Tags,
		Meta:            meta,
		HealthService:   "",
		TLS:             s.tls,
		CheckInterval:   s.cfg.CheckInterval,
		CheckTimeout:    s.cfg.CheckTimeout,
		DeregisterAfter: s.cfg.DeregisterAfter,
	}, nil
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

// HTTPHandler serves /metrics and, when Config.Pprof is on, /debug/pprof.
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{Registry: s.registry}))
	if s.cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// endStreamsOnShutdown ends long-lived streams when shutdown reaches them: the handler's context
// is cancelled, and a stream that then ends without an error of its own fails with Unavailable,
// telling the client to reconnect to another instance. grpc.Server.GracefulStop alone would wait
// for such streams forever.
func (s *Server) endStreamsOnShutdown() interceptors.Server {
	return interceptors.Server{
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

// relayedAsNoService is peerService, except that a trusted forwarder (the gateway) is no service:
// it relays its clients' calls, so a call from it is identified by the token it forwards alone.
// As a service it would let every browser behind it act for any user (auth.Identity.CanActFor
// trusts services with anyone's resources) and call users' methods with no token at all.
func relayedAsNoService(peerService func(ctx context.Context) string, forwarders []string) func(ctx context.Context) string {
	if peerService == nil || len(forwarders) == 0 {
		return peerService
	}
	forwarders = slices.Clone(forwarders)
	return func(ctx context.Context) string {
		if s := peerService(ctx); !slices.Contains(forwarders, s) {
			return s
		}
		return ""
	}
}
