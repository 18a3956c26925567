// Package client dials meshmart services with the chassis' client side: consul:// resolution,
// round-robin balancing with client-side health checking, retries for idempotent methods only,
// retry throttling, hedged reads (a slow call without side effects is sent again to another
// replica), keepalive pings that drop a hung connection, a circuit breaker per target, a default
// per-call timeout, propagation of the caller's credentials and request id, tracing, metrics and
// logging.
package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	_ "google.golang.org/grpc/health" // client-side health checking (healthCheckConfig)
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/observability"
)

// Option configures Dial.
type Option interface{ apply(*options) }

type options struct {
	svid           x509svid.Source
	bundle         x509bundle.Source
	trustDomain    spiffeid.TrustDomain
	server         string
	insecure       bool
	consulToken    string
	tracerProvider trace.TracerProvider
	registry       prometheus.Registerer
	timeout        time.Duration
	breaker        interceptors.BreakerSettings
	hedge          HedgeSettings
	extra          []grpc.DialOption
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithIdentity dials with mutual TLS: the client presents src's SVID, so the server knows which
// service calls, and requires the server to present the SVID of the service it asked for (see
// WithServer), verified against src's bundle. It is how services call each other.
func WithIdentity(src identity.Source) Option {
	return optionFunc(func(o *options) { o.svid, o.bundle = src, src })
}

// WithTrustBundle dials with TLS, presenting no certificate, and requires the server to present
// the SVID of the service asked for in trust domain td, verified against bundle: for tools,
// tests and load generators that call with a user's token only.
func WithTrustBundle(bundle x509bundle.Source, td spiffeid.TrustDomain) Option {
	return optionFunc(func(o *options) { o.svid, o.bundle, o.trustDomain = nil, bundle, td })
}

// WithServer names the service the target must prove to be. A consul:// target names it
// already; a host:port or dns:/// target needs it.
func WithServer(name string) Option { return optionFunc(func(o *options) { o.server = name }) }

// WithConsulToken resolves consul:// targets with the Consul ACL token token instead of the one
// the environment names (CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE).
func WithConsulToken(token string) Option {
	return optionFunc(func(o *options) { o.consulToken = token })
}

// WithInsecure dials in plaintext: the server is not verified and the client proves nothing. For
// local debugging against servers run with -insecure-plaintext, and in-process tests only.
func WithInsecure() Option { return optionFunc(func(o *options) { o.insecure = true }) }

// WithTracerProvider records client spans with tp. Without it spans are not recorded, but the
// caller's trace context is still propagated.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(o *options) { o.tracerProvider = tp })
}

// WithRegistry registers client metrics in r: the calls (grpc_client_*, by method and code), the
// retries gRPC made (meshmart_client_retries_total), the hedges sent
// (meshmart_client_hedges_total) and the breaker's state
// (meshmart_client_breaker_state and _transitions_total, by peer_service). Dials that share r
// share the metrics, each target's breaker and retries under its own peer_service. Without it no
// client metrics are kept.
func WithRegistry(r prometheus.Registerer) Option {
	return optionFunc(func(o *options) { o.registry = r })
}

// WithTimeout sets the deadline given to unary calls made without one; the default is 10s.
func WithTimeout(d time.Duration) Option { return optionFunc(func(o *options) { o.timeout = d }) }

// WithBreaker tunes the target's circuit breaker.
func WithBreaker(s interceptors.BreakerSettings) Option {
	return optionFunc(func(o *options) { o.breaker = s })
}

// WithDialOptions appends raw gRPC dial options, after the chassis' own.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return optionFunc(func(o *options) { o.extra = append(o.extra, opts...) })
}

// Dial returns a client connection to target: "consul://agent:8500/service?tag=x&dc=y",
// "dns:///host:port", or a plain "host:port". It does not connect until the first call. The
// connection is TLS, and only a server proving to be the service asked for is ever called (an
// instance registered in Consul under that name with another certificate fails its handshake and
// gets nothing): give WithIdentity, WithTrustBundle, or, for debugging, WithInsecure.
func Dial(target string, log *slog.Logger, opts ...Option) (*grpc.ClientConn, error) {
	o := options{tracerProvider: noop.NewTracerProvider(), timeout: 10 * time.Second}
	for _, opt := range opts {
		opt.apply(&o)
	}
	creds, err := o.credentials(target)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	sc, err := ServiceConfig(protoregistry.GlobalFiles)
	if err != nil {
		return nil, err
	}
	// Outermost first: the timeout bounds everything; logging and metrics see calls the breaker
	// refuses; the breaker counts one sample per logical call, outside gRPC's own retries.
	chain := []interceptors.Client{
		interceptors.Propagate(),
		interceptors.Timeout(o.timeout),
		interceptors.ClientLogging(log),
	}
	var (
		retries *retryCounter
		hedges  prometheus.Counter
	)
	if o.registry != nil {
		m, err := registerMetrics(o.registry)
		if err != nil {
			return nil, err
		}
		peer := o.serverName(target)
		chain = append(chain, m.calls.Client())
		o.breaker.OnStateChange = m.observeBreaker(peer, o.breaker.OnStateChange)
		retries = m.retryCounter(peer)
		hedges = m.hedges.WithLabelValues(peer) // exists from the start, at 0
	}
	chain = append(chain, interceptors.Breaker(target, o.breaker))
	if !o.hedge.Disable {
		// Inside the breaker, which counts one sample per logical call, hedged or not.
		chain = append(chain, newHedger(o.hedge, protoregistry.GlobalFiles, hedges).interceptor())
	}
	if retries != nil {
		// Innermost, so that each attempt (the first and its hedge) is marked once before gRPC's
		// retries; the stats handler below sees every attempt of it.
		chain = append(chain, retries.mark())
	}

	dialOpts := append(interceptors.ClientChain(chain...),
		grpc.WithTransportCredentials(creds),
		grpc.WithResolvers(consul.NewBuilder(log, o.consulToken)),
		grpc.WithDefaultServiceConfig(sc),
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(o.tracerProvider),
			otelgrpc.WithPropagators(observability.Propagator()),
		)),
		grpc.WithKeepaliveParams(Keepalive),
	)
	if retries != nil {
		dialOpts = append(dialOpts, grpc.WithStatsHandler(retries))
	}
	dialOpts = append(dialOpts, o.extra...)
	cc, err := grpc.NewClient(target, dialOpts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", target, err)
	}
	return cc, nil
}

// Keepalive are the client's keepalive pings: after 10s without a frame from the server (grpc-go's
// minimum: it raises a shorter Time to 10s), a ping; no answer within 2s and the connection is
// closed, its calls fail with UNAVAILABLE (and are retried elsewhere when idempotent), and round
// robin skips the replica until it reconnects. A process that hangs with its connections open
// (SIGSTOP, a frozen VM, a partition that drops packets) thus leaves the rotation within 12s even
// when no health check notices. The ping costs one small frame every 10s on an idle connection.
// pkg/server's enforcement policy accepts a ping every 10s: the client's pings are at least Time
// and a round trip apart (it waits Time after the last frame it read, the previous ping's
// acknowledgement), so none counts as a strike.
var Keepalive = keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}

// RetryPolicy is applied to every method whose idempotency_level is NO_SIDE_EFFECTS or
// IDEMPOTENT; other methods are never retried, since a retry could repeat their effect. Only
// UNAVAILABLE is retried: the call did not reach a handler, or the server went away mid-call.
var RetryPolicy = map[string]any{
	"maxAttempts":          4,
	"initialBackoff":       "0.05s",
	"maxBackoff":           "1s",
	"backoffMultiplier":    2,
	"retryableStatusCodes": []string{"UNAVAILABLE"},
}

// ServiceConfig returns the default service config for every service in files: round-robin
// (meshmart_round_robin: grpc-go's round_robin whose picker sends a hedge or a retry to a replica
// the call has not tried yet), client-side health checking of the whole server, RetryPolicy for the idempotent methods, and
// retry throttling. Throttling stops retries once failures outrun successes by about 50 (half of
// 100 tokens, each failure costing one and each success earning 0.1 back): loose enough that the
// calls in flight to one replica that dies are all retried, tight enough that a dead service is
// not hammered with retries.
func ServiceConfig(files *protoregistry.Files) (string, error) {
	type name struct {
		Service string `json:"service"`
		Method  string `json:"method"`
	}
	var names []name
	rangeMethods(files, func(svc protoreflect.ServiceDescriptor, m protoreflect.MethodDescriptor, level descriptorpb.MethodOptions_IdempotencyLevel) {
		switch level {
		case descriptorpb.MethodOptions_NO_SIDE_EFFECTS, descriptorpb.MethodOptions_IDEMPOTENT:
			names = append(names, name{string(svc.FullName()), string(m.Name())})
		}
	})
	slices.SortFunc(names, func(a, b name) int {
		if a.Service != b.Service {
			return strings.Compare(a.Service, b.Service)
		}
		return strings.Compare(a.Method, b.Method)
	})
	cfg := map[string]any{
		"loadBalancingConfig": []any{map[string]any{balancerName: map[string]any{}}},
		"healthCheckConfig":   map[string]any{"serviceName": ""},
		"retryThrottling":     map[string]any{"maxTokens": 100, "tokenRatio": 0.1},
	}
	if len(names) > 0 {
		cfg["methodConfig"] = []any{map[string]any{"name": names, "retryPolicy": RetryPolicy}}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("service config: %w", err)
	}
	return string(b), nil
}

// rangeMethods calls f with every method of every service in files, and its idempotency_level.
func rangeMethods(files *protoregistry.Files, f func(protoreflect.ServiceDescriptor, protoreflect.MethodDescriptor, descriptorpb.MethodOptions_IdempotencyLevel)) {
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			svc := fd.Services().Get(i)
			for j := range svc.Methods().Len() {
				m := svc.Methods().Get(j)
				opts, _ := m.Options().(*descriptorpb.MethodOptions)
				f(svc, m, opts.GetIdempotencyLevel())
			}
		}
		return true
	})
}

// serverName is the service target must prove to be: WithServer's, else the one a consul://
// target names.
func (o *options) serverName(target string) string {
	if o.server != "" {
		return o.server
	}
	return consul.ServiceOf(target)
}

// credentials are the transport credentials the options ask for, to dial target.
func (o *options) credentials(target string) (credentials.TransportCredentials, error) {
	if o.insecure {
		return insecure.NewCredentials(), nil
	}
	if o.bundle == nil {
		return nil, errors.New("no transport security: give client.WithIdentity, client.WithTrustBundle or client.WithInsecure")
	}
	server := o.serverName(target)
	if server == "" {
		return nil, errors.New("name the service the target must prove to be with client.WithServer")
	}
	td := o.trustDomain
	if o.svid != nil {
		own, err := identity.Own(o.svid)
		if err != nil {
			return nil, err
		}
		td = own.TrustDomain()
	}
	tc, err := identity.ClientConfig(o.svid, o.bundle, td, server)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(tc), nil
}
