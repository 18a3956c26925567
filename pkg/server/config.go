package server

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/interceptors"
)

// Config is everything a chassis server can be told. Each field is set, in increasing order of
// precedence, by its default, its environment variable and its command-line flag, as the tags
// say; pkg/app binds them and docs/configuration.md lists them all.
type Config struct {
	// GRPCAddr is where the gRPC server listens.
	GRPCAddr string `flag:"grpc-addr" env:"MESHMART_GRPC_ADDR" usage:"gRPC listen address"`
	// AdvertiseAddr is the host:port other processes reach this instance on, as registered in
	// Consul. Empty derives it from the listener, using 127.0.0.1 when the listener is on every
	// interface.
	AdvertiseAddr string `flag:"advertise-addr" env:"MESHMART_ADVERTISE_ADDR" usage:"host:port registered in Consul (default: derived from the listener)"`
	// HTTPAddr is where /metrics (and /debug/pprof when Pprof is on) are served; empty turns the
	// HTTP listener off.
	HTTPAddr string `flag:"http-addr" env:"MESHMART_HTTP_ADDR" usage:"/metrics and pprof listen address, its port registered in Consul as the metrics_port meta; empty disables"`
	// Pprof serves /debug/pprof on HTTPAddr. Off by default.
	Pprof bool `flag:"pprof" env:"MESHMART_PPROF" usage:"serve /debug/pprof on the HTTP listener"`
	// HealthAddr is where a second, plaintext gRPC server answers grpc.health.v1 alone (see
	// Server.HealthServer), for Kubernetes' native gRPC probes, which cannot speak TLS; empty, the
	// default, turns it off. Keep it inside the pod or node.
	HealthAddr string `flag:"health-addr" env:"MESHMART_HEALTH_ADDR" usage:"plaintext listen address serving only grpc.health.v1 (Check, Watch), for Kubernetes gRPC probes, which cannot speak TLS; never expose it outside the pod; empty disables"`

	// ConsulAddr is the Consul agent's HTTP address; empty turns registration off. The agent's
	// ACL token, if any, is read from CONSUL_HTTP_TOKEN.
	ConsulAddr string `flag:"consul-addr" env:"CONSUL_HTTP_ADDR" usage:"Consul agent HTTP address (CONSUL_HTTP_TOKEN is honoured); empty disables registration"`
	// Tags are Consul tags for this instance.
	Tags []string `flag:"tags" env:"MESHMART_TAGS" usage:"comma-separated Consul tags"`
	// CheckInterval is how often Consul health-checks the instance over gRPC.
	CheckInterval time.Duration `flag:"check-interval" env:"MESHMART_CHECK_INTERVAL" usage:"Consul gRPC health check interval"`
	// CheckTimeout bounds one health check.
	CheckTimeout time.Duration `flag:"check-timeout" env:"MESHMART_CHECK_TIMEOUT" usage:"Consul gRPC health check timeout"`
	// DeregisterAfter removes an instance that stayed critical this long.
	DeregisterAfter time.Duration `flag:"deregister-after" env:"MESHMART_DEREGISTER_AFTER" usage:"Consul removes an instance critical this long"`

	// DrainDelay is how long a stopping server keeps serving after it turned NOT_SERVING and left
	// Consul, so that clients re-resolve before connections close.
	DrainDelay time.Duration `flag:"drain-delay" env:"MESHMART_DRAIN_DELAY" usage:"time between leaving Consul and closing connections"`
	// ShutdownTimeout bounds the graceful stop that follows; calls still running then are cut
	// off.
	ShutdownTimeout time.Duration `flag:"shutdown-timeout" env:"MESHMART_SHUTDOWN_TIMEOUT" usage:"bound on the graceful stop"`

	// TLSCert and TLSKey are the service's identity: an X.509 SVID naming it
	// (spiffe://<trust domain>/service/<name>) and its key, as PEM files, reloaded when they change.
	// TLSCA is the trust domain's CA bundle, which verifies the certificates peers present: clients
	// that present one, and every server this service dials. `make keys` writes development ones
	// into data/pki; see docs/operations.md, "Identities", for your own CA.
	TLSCert string `flag:"tls-cert" env:"MESHMART_TLS_CERT" usage:"PEM X.509 SVID of this service (URI SAN spiffe://<trust domain>/service/<name>); reloaded when it changes"`
	TLSKey  string `flag:"tls-key" env:"MESHMART_TLS_KEY" usage:"PEM private key of -tls-cert; reloaded when it changes"`
	TLSCA   string `flag:"tls-ca" env:"MESHMART_TLS_CA" usage:"PEM CA bundle of the trust domain: verifies client certificates when presented and every server this service dials"`
	// SPIFFESocket takes the identity from the SPIFFE Workload API (a SPIRE agent) instead of the
	// TLS files.
	SPIFFESocket string `flag:"spiffe-endpoint-socket" env:"SPIFFE_ENDPOINT_SOCKET" usage:"SPIFFE Workload API address (unix:///run/spire/agent.sock): the identity comes from SPIRE instead of the -tls-* files"`
	// InsecurePlaintext serves and dials without TLS. For local debugging only: no caller can
	// then prove it is a service, so every call a service makes on its own behalf is refused.
	InsecurePlaintext bool `flag:"insecure-plaintext" env:"MESHMART_INSECURE_PLAINTEXT" usage:"serve and dial without TLS: local debugging only, never the default"`

	// MaxRecvMsgSize and MaxSendMsgSize bound message sizes in bytes.
	MaxRecvMsgSize int `flag:"max-recv-msg-size" env:"MESHMART_MAX_RECV_MSG_SIZE" usage:"largest message received, in bytes"`
	MaxSendMsgSize int `flag:"max-send-msg-size" env:"MESHMART_MAX_SEND_MSG_SIZE" usage:"largest message sent, in bytes"`
	// MaxConcurrentStreams bounds the calls open at once on one client connection (HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS); 0 leaves grpc-go's default, which is no bound.
	MaxConcurrentStreams int `flag:"max-concurrent-streams" env:"MESHMART_MAX_CONCURRENT_STREAMS" usage:"calls open at once on one client connection; 0: unbounded"`
	// StreamsPerUser bounds the server-streaming calls (watch and track streams, exports) one user
	// has open at once on each instance; over it a new one fails with ResourceExhausted. Services
	// are not bounded by it. 0 turns it off.
	StreamsPerUser int `flag:"streams-per-user" env:"MESHMART_STREAMS_PER_USER" usage:"server-streaming calls one user may have open at once on each instance; 0 disables"`
	// DefaultDeadline is given to unary calls that arrive without one; 0 turns it off.
	DefaultDeadline time.Duration `flag:"default-deadline" env:"MESHMART_DEFAULT_DEADLINE" usage:"deadline for unary calls that arrive without one; 0 disables"`
	// RateLimit is the calls per second allowed per client, RateBurst the burst above it; a
	// RateLimit of 0 turns limiting off.
	RateLimit float64 `flag:"rate-limit" env:"MESHMART_RATE_LIMIT" usage:"calls per second per client; 0 disables"`
	RateBurst int     `flag:"rate-burst" env:"MESHMART_RATE_BURST" usage:"burst above the per-client rate"`
	// AddressRateLimit is the calls per second allowed per client IP address before anything
	// else is done with a call (no token is checked, nothing is logged per call),
	// AddressRateBurst the burst above it; 0 turns it off. The address is the peer's, or the
	// client's a trusted forwarder names (TrustedForwarders). Set it above what the busiest
	// legitimate address sends (a NAT, a proxy in front of the service): it is the first guard,
	// not the per-user quota.
	AddressRateLimit float64 `flag:"address-rate-limit" env:"MESHMART_ADDRESS_RATE_LIMIT" usage:"calls per second per client IP address (the peer's, or the one a -trusted-forwarders service names), checked before authentication; 0 disables"`
	AddressRateBurst int     `flag:"address-rate-burst" env:"MESHMART_ADDRESS_RATE_BURST" usage:"burst above the per-address rate"`
	// TrustedForwarders are the services (by the name their verified mutual-TLS certificate
	// gives) that call on behalf of clients they name in x-forwarded-for metadata: for their
	// calls the per-address limits (AddressRateLimit, RateLimit for anonymous callers, the user
	// service's login backoff) key on the last element of that header, so that the browsers
	// behind the REST gateway are limited one by one. From any other caller the header is
	// ignored, and a value that is not an IP address falls back to the peer's. Empty trusts
	// nobody.
	TrustedForwarders []string `flag:"trusted-forwarders" env:"MESHMART_TRUSTED_FORWARDERS" usage:"comma-separated services whose x-forwarded-for names the client address the per-address limits key on; empty: none"`

	// AuthKeysTarget is where the user service publishes the keys that verify access tokens
	// (user.v1 ListTokenKeys), dialled with pkg/client: pkg/app fetches them at start, every
	// AuthKeysRefresh, and when a token names a key it does not know. Every service but the
	// user service needs it or AuthPublicKey.
	AuthKeysTarget string `flag:"auth-keys-target" env:"MESHMART_AUTH_KEYS_TARGET" usage:"where the user service publishes the token keys; consul://host:8500/user"`
	// AuthKeysRefresh is how often the keys are fetched from AuthKeysTarget.
	AuthKeysRefresh time.Duration `flag:"auth-keys-refresh" env:"MESHMART_AUTH_KEYS_REFRESH" usage:"how often the token keys are fetched from -auth-keys-target"`
	// AuthPublicKey is the PEM file of one Ed25519 key that verifies access tokens, the
	// alternative to AuthKeysTarget for tests and for setups without a user service (and no key
	// rotation), unless WithVerifier gives the verifier itself. Empty, without WithVerifier,
	// turns authentication off, which only a test should do: pkg/app refuses to start a service
	// that way.
	AuthPublicKey string `flag:"auth-public-key" env:"MESHMART_AUTH_PUBLIC_KEY" usage:"PEM Ed25519 public key verifying access tokens, instead of -auth-keys-target"`
	// AuthIssuer is the issuer tokens are signed as and must carry.
	AuthIssuer string `flag:"auth-issuer" env:"MESHMART_AUTH_ISSUER" usage:"issuer (iss) access tokens are signed as and must carry"`
	// AuthAudience is the audience tokens must carry.
	AuthAudience string `flag:"auth-audience" env:"MESHMART_AUTH_AUDIENCE" usage:"audience access tokens must carry"`

	// LogLevel is debug, info, warn or error.
	LogLevel string `flag:"log-level" env:"MESHMART_LOG_LEVEL" usage:"debug, info, warn or error"`
	// LogFormat is json or text.
	LogFormat string `flag:"log-format" env:"MESHMART_LOG_FORMAT" usage:"json or text"`
	// LogPayloads logs every message, secrets redacted.
	LogPayloads bool `flag:"log-payloads" env:"MESHMART_LOG_PAYLOADS" usage:"log every message, debug_redact fields redacted"`
	// LogSample is the share of successful unary calls that get a finished-call line at info
	// when nothing else asks for one: a failed call, a stream, a call slower than LogSlow and a
	// call whose trace is sampled are always logged. 1 logs every call, as before issue 18;
	// Prometheus counts every call either way.
	LogSample float64 `flag:"log-sample" env:"MESHMART_LOG_SAMPLE" usage:"share of fast successful unary calls logged (0 to 1); failed, slow, streaming and trace-sampled calls always are; 1 logs every call"`
	// LogSlow is the duration from which a successful call is always logged.
	LogSlow time.Duration `flag:"log-slow" env:"MESHMART_LOG_SLOW" usage:"a successful call this slow or slower is always logged"`
}

// DefaultConfig returns the defaults, with the gRPC server on grpcAddr.
func DefaultConfig(grpcAddr string) Config {
	return Config{
		GRPCAddr:        grpcAddr,
		HTTPAddr:        "127.0.0.1:0",
		ConsulAddr:      "127.0.0.1:8500",
		CheckInterval:   2 * time.Second,
		CheckTimeout:    time.Second,
		DeregisterAfter: time.Minute,
		DrainDelay:      2 * time.Second,
		ShutdownTimeout: 10 * time.Second,
		MaxRecvMsgSize:  4 << 20,
		MaxSendMsgSize:  4 << 20,
		DefaultDeadline: 30 * time.Second,
		// A connection's calls beyond this wait in the client rather than cost the server a
		// goroutine each; a browser, a CLI or a service replica needs far fewer.
		MaxConcurrentStreams: 1000,
		StreamsPerUser:       16,
		RateLimit:            200,
		RateBurst:            400,
		AddressRateLimit:     500,
		AddressRateBurst:     1000,
		TrustedForwarders:    []string{"gateway"},
		AuthKeysRefresh:      time.Minute,
		AuthIssuer:           auth.DefaultIssuer,
		AuthAudience:         auth.DefaultAudience,
		LogLevel:             "info",
		LogFormat:            "json",
		LogSample:            0.01,
		LogSlow:              250 * time.Millisecond,
	}
}

// ErrNoTLS is the error of a configuration that gives the server no identity.
var ErrNoTLS = errors.New("TLS is required: give -tls-cert, -tls-key and -tls-ca (`make keys` writes development ones into data/pki), " +
	"or -spiffe-endpoint-socket; -insecure-plaintext is for local debugging only")

// Validate reports settings that cannot work together.
func (c *Config) Validate() error {
	var errs []error
	files := c.TLSCert != "" || c.TLSKey != "" || c.TLSCA != ""
	switch {
	case files && (c.TLSCert == "" || c.TLSKey == "" || c.TLSCA == ""):
		errs = append(errs, errors.New("set all of -tls-cert, -tls-key and -tls-ca, or none"))
	case files && c.SPIFFESocket != "":
		errs = append(errs, errors.New("set the -tls-* files or -spiffe-endpoint-socket, not both"))
	case (files || c.SPIFFESocket != "") && c.InsecurePlaintext:
		errs = append(errs, errors.New("-insecure-plaintext contradicts the TLS settings"))
	case !files && c.SPIFFESocket == "" && !c.InsecurePlaintext:
		errs = append(errs, ErrNoTLS)
	}
	if c.RateLimit < 0 || (c.RateLimit > 0 && c.RateBurst < 1) {
		errs = append(errs, errors.New("-rate-limit must be 0 or positive with -rate-burst of at least 1"))
	}
	if c.StreamsPerUser < 0 || c.MaxConcurrentStreams < 0 || c.MaxConcurrentStreams > math.MaxUint32 {
		errs = append(errs, errors.New("-streams-per-user and -max-concurrent-streams must be 0 or positive"))
	}
	if c.AddressRateLimit < 0 || (c.AddressRateLimit > 0 && c.AddressRateBurst < 1) {
		errs = append(errs, errors.New("-address-rate-limit must be 0 or positive with -address-rate-burst of at least 1"))
	}
	if c.AuthKeysRefresh <= 0 {
		errs = append(errs, errors.New("-auth-keys-refresh must be positive"))
	}
	if !(c.LogSample >= 0 && c.LogSample <= 1) || c.LogSlow < 0 { // NaN fails too
		errs = append(errs, errors.New("-log-sample must be between 0 and 1 and -log-slow not negative"))
	}
	if c.CheckInterval <= 0 || c.CheckTimeout <= 0 {
		errs = append(errs, errors.New("-check-interval and -check-timeout must be positive"))
	}
	return errors.Join(errs...)
}

// AuthOptions are the issuer and audience of c, as auth.NewIssuer and auth.NewVerifier take
// them: the signer and every verifier read the same settings.
func (c *Config) AuthOptions() []auth.Option {
	return []auth.Option{auth.WithIssuer(c.AuthIssuer), auth.WithAudience(c.AuthAudience)}
}

// ClientAddress returns how the server names the address a call comes from
// (interceptors.ClientAddress, trusting TrustedForwarders by their verified mutual-TLS
// certificates), for a service that keys limits of its own on it, as the user service's login
// backoff does: its limits and the server's then agree on who a client is.
func (c *Config) ClientAddress() func(ctx context.Context) string {
	return interceptors.ClientAddress(identity.PeerService, c.TrustedForwarders)
}
