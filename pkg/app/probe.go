package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshmart/meshmart/pkg/identity"
	"github.com/meshmart/meshmart/pkg/server"
)

// ProbeCommand is the subcommand that turns a service binary into its own health probe:
// `user healthcheck` exits 0 when the user service configured by the same environment answers
// SERVING. Container images use it as their HEALTHCHECK, so they need neither a shell nor curl.
const ProbeCommand = "healthcheck"

// Probe asks the instance that defaultGRPCAddr, the environment and args configure for its
// overall health (grpc.health.v1, the service name ""), on loopback, within three seconds. It
// returns nil only for SERVING.
//
// Under TLS it dials with the service's own identity and requires the server to prove the same
// one: a probe answered by another process on the port fails.
func Probe(ctx context.Context, defaultGRPCAddr string, args []string, getenv func(string) string) error {
	cfg := server.DefaultConfig(defaultGRPCAddr)
	fs := flag.NewFlagSet(ProbeCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := Bind(fs, getenv, &cfg); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	_, port, err := net.SplitHostPort(cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc address %q: %w", cfg.GRPCAddr, err)
	}
	creds := insecure.NewCredentials()
	if !cfg.InsecurePlaintext {
		src, closeID, err := cfg.Identity(ctx, slog.New(slog.DiscardHandler))
		if err != nil {
			return err
		}
		defer closeID()
		own, err := identity.Own(src)
		if err != nil {
			return err
		}
		name, ok := identity.ServiceName(own)
		if !ok {
			return fmt.Errorf("%s names no service", own)
		}
		tc, err := identity.ClientConfig(src, src, own.TrustDomain(), name)
		if err != nil {
			return err
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", port), grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return fmt.Errorf("health check of 127.0.0.1:%s: %w", port, err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return errors.New("127.0.0.1:" + port + " is " + resp.GetStatus().String())
	}
	return nil
}
