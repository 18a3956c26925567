package app_test

import (
	"context"
	"errors"
	"flag"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

func noEnv(string) string { return "" }

// serve runs the example server configured by cfg and returns its address.
func serve(t *testing.T, cfg server.Config) string {
	t.Helper()
	srv, err := server.New("example", cfg, testkit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only")); err != nil {
		t.Fatal(err)
	}
	return testkit.Serve(t, srv).Addr
}

func TestProbe(t *testing.T) {
	t.Parallel()
	plain := serve(t, testkit.TestConfig())
	if err := app.Probe(t.Context(), ":50051", []string{"-grpc-addr", plain, "-insecure-plaintext"}, noEnv); err != nil {
		t.Errorf("probe of a serving instance: %v", err)
	}
	// The environment configures the probe as it does the service.
	env := envOf(map[string]string{"MESHMART_GRPC_ADDR": plain, "MESHMART_INSECURE_PLAINTEXT": "true"})
	if err := app.Probe(t.Context(), ":50051", nil, env); err != nil {
		t.Errorf("probe configured by the environment: %v", err)
	}

	pki := testkit.NewPKI(t, "example", "user")
	cfg := testkit.TestConfig()
	pki.Configure(&cfg, "example")
	tlsAddr := serve(t, cfg)
	tlsArgs := func(service string) []string {
		cert, key, ca := pki.Files(service)
		return []string{"-grpc-addr", tlsAddr, "-tls-cert", cert, "-tls-key", key, "-tls-ca", ca}
	}
	if err := app.Probe(t.Context(), ":50051", tlsArgs("example"), noEnv); err != nil {
		t.Errorf("probe over mutual TLS: %v", err)
	}
	if err := app.Probe(t.Context(), ":50051", []string{"-grpc-addr", tlsAddr, "-insecure-plaintext"}, noEnv); err == nil {
		t.Error("a plaintext probe of a TLS server passed")
	}
	if err := app.Probe(t.Context(), ":50051", tlsArgs("user"), noEnv); err == nil {
		t.Error("the probe accepted a server that is not its own service")
	}

	closed := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	if err := app.Probe(t.Context(), ":50051", []string{"-grpc-addr", closed}, noEnv); err == nil {
		t.Error("probe of a closed port passed")
	}
}

// svcSettings are an example service's own settings.
type svcSettings struct {
	Password string `flag:"service-password" env:"EX_SERVICE_PASSWORD" secret:"true" required:"it signs in"`
}

func exampleService(t *testing.T, start func(ctx context.Context, s *app.Setup) error) app.Service {
	return app.Service{Name: "example", GRPCAddr: "127.0.0.1:0", Settings: &svcSettings{}, Start: start,
		Commands: []app.Command{{Name: "greet", Run: func(_ context.Context, args []string) error {
			if strings.Join(args, " ") != "-to ada" {
				t.Errorf("greet got %q", args)
			}
			return errors.New("greeted")
		}}}}
}

func TestRunDispatchesSubcommands(t *testing.T) {
	t.Parallel()
	svc := exampleService(t, func(context.Context, *app.Setup) error {
		t.Error("a subcommand started the service")
		return nil
	})
	if err := app.Run(t.Context(), svc, []string{"greet", "-to", "ada"}, noEnv); err == nil || err.Error() != "greeted" {
		t.Errorf("Run greet = %v, want the command's own result", err)
	}
	addr := serve(t, testkit.TestConfig())
	if err := app.Run(t.Context(), svc, []string{app.ProbeCommand, "-grpc-addr", addr, "-insecure-plaintext"}, noEnv); err != nil {
		t.Errorf("Run %s of a serving instance: %v", app.ProbeCommand, err)
	}
	if err := app.Run(t.Context(), svc, []string{"-h"}, noEnv); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Run -h = %v, want flag.ErrHelp", err)
	}
}

func TestRunChecksSettings(t *testing.T) {
	t.Parallel()
	started := false
	svc := exampleService(t, func(context.Context, *app.Setup) error { started = true; return nil })
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"required setting missing", nil, nil, "-service-password (EX_SERVICE_PASSWORD) is required: it signs in"},
		{"bad environment value", []string{"-service-password", "pw"}, map[string]string{"MESHMART_DRAIN_DELAY": "soon"}, `MESHMART_DRAIN_DELAY="soon"`},
		{"invalid chassis settings", []string{"-service-password", "pw", "-tls-cert", "cert.pem"}, nil, "-tls-key"},
		{"unknown flag", []string{"-nope"}, nil, "nope"},
	}
	for _, tt := range tests {
		err := app.Run(t.Context(), svc, tt.args, envOf(tt.env))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Run = %v, want an error with %q", tt.name, err, tt.want)
		}
	}
	if started {
		t.Error("the service started with bad settings")
	}
}

func TestRunRequiresAuthentication(t *testing.T) {
	t.Parallel()
	args := []string{"-service-password", "pw", "-consul-addr", "", "-http-addr", "", "-insecure-plaintext"}
	const want = "-auth-keys-target (MESHMART_AUTH_KEYS_TARGET) or -auth-public-key (MESHMART_AUTH_PUBLIC_KEY) is required"
	keys := testkit.NewKeys(t)
	errStarted := errors.New("started")
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string // "" means Start runs
	}{
		{"neither", nil, nil, want},
		{"keys target flag", []string{"-auth-keys-target", "127.0.0.1:1"}, nil, ""},
		{"keys target environment", nil, map[string]string{"MESHMART_AUTH_KEYS_TARGET": "consul://127.0.0.1:1/user"}, ""},
		{"public key", []string{"-auth-public-key", keys.PublicKeyFile}, nil, ""},
		{"both", []string{"-auth-public-key", keys.PublicKeyFile}, map[string]string{"MESHMART_AUTH_KEYS_TARGET": "127.0.0.1:1"}, "not both"},
		{"keys target with a bad refresh", []string{"-auth-keys-target", "127.0.0.1:1", "-auth-keys-refresh", "0s"}, nil, "-auth-keys-refresh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			started := false
			svc := exampleService(t, func(context.Context, *app.Setup) error { started = true; return errStarted })
			err := app.Run(t.Context(), svc, append(slices.Clone(args), tt.args...), envOf(tt.env))
			if tt.wantErr == "" {
				if !errors.Is(err, errStarted) {
					t.Errorf("Run = %v, want the service started", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Run = %v, want an error with %q", err, tt.wantErr)
			}
			if started {
				t.Error("the service started")
			}
		})
	}

	// A service that verifies its own tokens but then gives no verifier is refused all the same,
	// and what it opened is closed.
	closed := false
	svc := exampleService(t, func(_ context.Context, s *app.Setup) error {
		s.Defer("database", func() error { closed = true; return nil })
		return s.Serve(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only"))
	})
	svc.OwnVerifier = true
	if err := app.Run(t.Context(), svc, args, noEnv); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Run of a service with no verifier = %v, want the kit's authentication error", err)
	}
	if !closed {
		t.Error("what Start opened was not closed")
	}
}

func TestRunServesUntilContextEnds(t *testing.T) {
	t.Parallel()
	keys := testkit.NewKeys(t)
	var addr string
	ctx, cancel := context.WithCancel(t.Context())
	svc := exampleService(t, func(_ context.Context, s *app.Setup) error {
		if s.Config.AuthPublicKey != keys.PublicKeyFile {
			t.Errorf("Setup.Config.AuthPublicKey = %q", s.Config.AuthPublicKey)
		}
		s.Go("stopper", func(context.Context) error {
			if err := app.Probe(t.Context(), "", []string{"-grpc-addr", addr, "-insecure-plaintext"}, noEnv); err != nil {
				t.Errorf("probe of the running service: %v", err)
			}
			cancel()
			return nil
		})
		return s.Serve(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only"))
	})
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
	env := envOf(map[string]string{"EX_SERVICE_PASSWORD": "pw", "MESHMART_AUTH_PUBLIC_KEY": keys.PublicKeyFile,
		"MESHMART_GRPC_ADDR": addr, "MESHMART_DRAIN_DELAY": "0s", "MESHMART_LOG_LEVEL": "warn", "MESHMART_INSECURE_PLAINTEXT": "true"})
	if err := app.Run(ctx, svc, []string{"-consul-addr", "", "-http-addr", ""}, env); err != nil {
		t.Errorf("Run = %v, want nil after ctx ended", err)
	}
}

func TestServeChassis(t *testing.T) {
	t.Parallel()
	keys := testkit.NewKeys(t)
	base := []string{"-consul-addr", "", "-http-addr", "", "-drain-delay", "0s", "-log-level", "warn", "-insecure-plaintext"}
	tests := []struct {
		name    string
		edge    bool
		args    []string
		opts    []server.Option
		wantErr string // "" means the chassis server serves health until ctx ends
	}{
		{"edge without token settings", true, nil, nil, ""},
		{"edge with a public key", true, []string{"-auth-public-key", keys.PublicKeyFile}, nil, ""},
		{"edge told two ways", true, []string{"-auth-public-key", keys.PublicKeyFile, "-auth-keys-target", "127.0.0.1:1"}, nil, "not both"},
		{"service that is no edge", false, nil, nil, "-auth-keys-target (MESHMART_AUTH_KEYS_TARGET) or -auth-public-key"},
		{"business service smuggled in", true, nil,
			[]server.Option{server.WithService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers("only"))}, "ServeChassis serves health and reflection only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testkit.FreePort(t)))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			probed := false
			svc := exampleService(t, func(_ context.Context, s *app.Setup) error {
				if err := s.ServeChassis(tt.opts...); err != nil {
					return err
				}
				s.Go("prober", func(context.Context) error {
					defer cancel()
					if err := app.Probe(t.Context(), "", []string{"-grpc-addr", addr, "-insecure-plaintext"}, noEnv); err != nil {
						return err
					}
					probed = true
					return nil
				})
				return nil
			})
			svc.Edge = tt.edge
			args := append(slices.Clone(base), "-grpc-addr", addr, "-service-password", "pw")
			err := app.Run(ctx, svc, append(args, tt.args...), noEnv)
			if tt.wantErr == "" {
				if err != nil || !probed {
					t.Errorf("Run = %v (probed: %v), want a chassis server answering health checks", err, probed)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Run = %v, want an error with %q", err, tt.wantErr)
			}
		})
	}
}
