package server

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is everything a chassis server can be told. Each field is set, in increasing order of
// precedence, by its default, its environment variable and its command-line flag; the README's
// configuration table lists them all.
type Config struct {
	// GRPCAddr is where the gRPC server listens (MESHMART_GRPC_ADDR, -grpc-addr).
	GRPCAddr string
	// AdvertiseAddr is the host:port other processes reach this instance on, as registered in
	// Consul (MESHMART_ADVERTISE_ADDR, -advertise-addr). Empty derives it from the listener,
	// using 127.0.0.1 when the listener is on every interface.
	AdvertiseAddr string
	// HTTPAddr is where /metrics (and /debug/pprof when Pprof is on) are served
	// (MESHMART_HTTP_ADDR, -http-addr); empty turns the HTTP listener off.
	HTTPAddr string
	// Pprof serves /debug/pprof on HTTPAddr (MESHMART_PPROF, -pprof). Off by default.
	Pprof bool

	// ConsulAddr is the Consul agent's HTTP address (CONSUL_HTTP_ADDR, -consul-addr); empty turns
	// registration off. The agent's ACL token, if any, is read from CONSUL_HTTP_TOKEN.
	ConsulAddr string
	// Tags are Consul tags for this instance (MESHMART_TAGS, -tags; comma-separated).
	Tags []string
	// CheckInterval is how often Consul health-checks the instance over gRPC
	// (MESHMART_CHECK_INTERVAL, -check-interval).
	CheckInterval time.Duration
	// CheckTimeout bounds one health check (MESHMART_CHECK_TIMEOUT, -check-timeout).
	CheckTimeout time.Duration
	// DeregisterAfter removes an instance that stayed critical this long
	// (MESHMART_DEREGISTER_AFTER, -deregister-after).
	DeregisterAfter time.Duration

	// DrainDelay is how long a stopping server keeps serving after it turned NOT_SERVING and left
	// Consul, so that clients re-resolve before connections close (MESHMART_DRAIN_DELAY,
	// -drain-delay).
	DrainDelay time.Duration
	// ShutdownTimeout bounds the graceful stop that follows; calls still running then are cut
	// off (MESHMART_SHUTDOWN_TIMEOUT, -shutdown-timeout).
	ShutdownTimeout time.Duration

	// TLSCert and TLSKey are PEM files that turn TLS on (MESHMART_TLS_CERT, MESHMART_TLS_KEY,
	// -tls-cert, -tls-key).
	TLSCert, TLSKey string
	// TLSClientCA is a PEM bundle; when set, clients must present a certificate it signed (mTLS)
	// (MESHMART_TLS_CLIENT_CA, -tls-client-ca).
	TLSClientCA string

	// MaxRecvMsgSize and MaxSendMsgSize bound message sizes in bytes (MESHMART_MAX_RECV_MSG_SIZE,
	// MESHMART_MAX_SEND_MSG_SIZE, -max-recv-msg-size, -max-send-msg-size).
	MaxRecvMsgSize, MaxSendMsgSize int
	// DefaultDeadline is given to unary calls that arrive without one (MESHMART_DEFAULT_DEADLINE,
	// -default-deadline); 0 turns it off.
	DefaultDeadline time.Duration
	// RateLimit is the calls per second allowed per client, RateBurst the burst above it
	// (MESHMART_RATE_LIMIT, MESHMART_RATE_BURST, -rate-limit, -rate-burst); a RateLimit of 0
	// turns limiting off.
	RateLimit float64
	RateBurst int

	// AuthPublicKey is the PEM file of the Ed25519 key that verifies access tokens
	// (MESHMART_AUTH_PUBLIC_KEY, -auth-public-key). Empty turns authentication off, which only a
	// test should do.
	AuthPublicKey string
	// AuthAudience is the audience tokens must carry (MESHMART_AUTH_AUDIENCE, -auth-audience).
	AuthAudience string

	// LogLevel is debug, info, warn or error (MESHMART_LOG_LEVEL, -log-level).
	LogLevel string
	// LogFormat is json or text (MESHMART_LOG_FORMAT, -log-format).
	LogFormat string
	// LogPayloads logs every message, secrets redacted (MESHMART_LOG_PAYLOADS, -log-payloads).
	LogPayloads bool
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
		RateLimit:       200,
		RateBurst:       400,
		AuthAudience:    "meshmart",
		LogLevel:        "info",
		LogFormat:       "json",
	}
}

// setting binds one Config field to its flag and environment variable.
type setting struct {
	flag, env, usage string
	value            flag.Value
}

// RegisterFlags defines c's flags on fs, with defaults taken from c overridden by the environment
// as getenv reports it (os.Getenv when nil). It returns an error naming every environment variable
// that does not parse.
func (c *Config) RegisterFlags(fs *flag.FlagSet, getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	settings := []setting{
		{"grpc-addr", "MESHMART_GRPC_ADDR", "gRPC listen address", (*stringValue)(&c.GRPCAddr)},
		{"advertise-addr", "MESHMART_ADVERTISE_ADDR", "host:port registered in Consul (default: derived from the listener)", (*stringValue)(&c.AdvertiseAddr)},
		{"http-addr", "MESHMART_HTTP_ADDR", "metrics and pprof listen address; empty disables", (*stringValue)(&c.HTTPAddr)},
		{"pprof", "MESHMART_PPROF", "serve /debug/pprof on the HTTP listener", (*boolValue)(&c.Pprof)},
		{"consul-addr", "CONSUL_HTTP_ADDR", "Consul agent HTTP address; empty disables registration", (*stringValue)(&c.ConsulAddr)},
		{"tags", "MESHMART_TAGS", "comma-separated Consul tags", (*listValue)(&c.Tags)},
		{"check-interval", "MESHMART_CHECK_INTERVAL", "Consul gRPC health check interval", (*durationValue)(&c.CheckInterval)},
		{"check-timeout", "MESHMART_CHECK_TIMEOUT", "Consul gRPC health check timeout", (*durationValue)(&c.CheckTimeout)},
		{"deregister-after", "MESHMART_DEREGISTER_AFTER", "Consul removes an instance critical this long", (*durationValue)(&c.DeregisterAfter)},
		{"drain-delay", "MESHMART_DRAIN_DELAY", "time between leaving Consul and closing connections", (*durationValue)(&c.DrainDelay)},
		{"shutdown-timeout", "MESHMART_SHUTDOWN_TIMEOUT", "bound on the graceful stop", (*durationValue)(&c.ShutdownTimeout)},
		{"tls-cert", "MESHMART_TLS_CERT", "PEM certificate file; enables TLS", (*stringValue)(&c.TLSCert)},
		{"tls-key", "MESHMART_TLS_KEY", "PEM private key file", (*stringValue)(&c.TLSKey)},
		{"tls-client-ca", "MESHMART_TLS_CLIENT_CA", "PEM CA bundle; requires client certificates (mTLS)", (*stringValue)(&c.TLSClientCA)},
		{"max-recv-msg-size", "MESHMART_MAX_RECV_MSG_SIZE", "largest message received, in bytes", (*intValue)(&c.MaxRecvMsgSize)},
		{"max-send-msg-size", "MESHMART_MAX_SEND_MSG_SIZE", "largest message sent, in bytes", (*intValue)(&c.MaxSendMsgSize)},
		{"default-deadline", "MESHMART_DEFAULT_DEADLINE", "deadline for unary calls that arrive without one; 0 disables", (*durationValue)(&c.DefaultDeadline)},
		{"rate-limit", "MESHMART_RATE_LIMIT", "calls per second per client; 0 disables", (*floatValue)(&c.RateLimit)},
		{"rate-burst", "MESHMART_RATE_BURST", "burst above the per-client rate", (*intValue)(&c.RateBurst)},
		{"auth-public-key", "MESHMART_AUTH_PUBLIC_KEY", "PEM Ed25519 public key verifying access tokens; empty disables auth", (*stringValue)(&c.AuthPublicKey)},
		{"auth-audience", "MESHMART_AUTH_AUDIENCE", "audience access tokens must carry", (*stringValue)(&c.AuthAudience)},
		{"log-level", "MESHMART_LOG_LEVEL", "debug, info, warn or error", (*stringValue)(&c.LogLevel)},
		{"log-format", "MESHMART_LOG_FORMAT", "json or text", (*stringValue)(&c.LogFormat)},
		{"log-payloads", "MESHMART_LOG_PAYLOADS", "log every message, secrets redacted", (*boolValue)(&c.LogPayloads)},
	}
	var errs []error
	for _, s := range settings {
		if v, ok := lookup(getenv, s.env); ok {
			if err := s.value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", s.env, v, err))
			}
		}
		fs.Var(s.value, s.flag, fmt.Sprintf("%s (env %s)", s.usage, s.env))
	}
	return errors.Join(errs...)
}

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

// Validate reports settings that cannot work together.
func (c *Config) Validate() error {
	var errs []error
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("set both -tls-cert and -tls-key, or neither"))
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		errs = append(errs, errors.New("-tls-client-ca needs -tls-cert and -tls-key"))
	}
	if c.RateLimit < 0 || (c.RateLimit > 0 && c.RateBurst < 1) {
		errs = append(errs, errors.New("-rate-limit must be 0 or positive with -rate-burst of at least 1"))
	}
	if c.CheckInterval <= 0 || c.CheckTimeout <= 0 {
		errs = append(errs, errors.New("-check-interval and -check-timeout must be positive"))
	}
	return errors.Join(errs...)
}

type stringValue string

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

type boolValue bool

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	*v = boolValue(b)
	return err
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }

type intValue int

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	*v = intValue(n)
	return err
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

type floatValue float64

func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	*v = floatValue(f)
	return err
}
func (v *floatValue) String() string { return strconv.FormatFloat(float64(*v), 'g', -1, 64) }

type durationValue time.Duration

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	*v = durationValue(d)
	return err
}
func (v *durationValue) String() string { return time.Duration(*v).String() }

type listValue []string

func (v *listValue) Set(s string) error {
	*v = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*v = append(*v, part)
		}
	}
	return nil
}
func (v *listValue) String() string { return strings.Join(*v, ",") }
