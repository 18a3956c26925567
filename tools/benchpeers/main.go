// Command benchpeers serves testkit's example GetUser through go-kratos or go-zero, each set up
// as its users usually run it, for the chassis rows of `make bench` (tools/bench) to compare the
// meshmart chassis with. It prints "listening <address>" once it accepts calls, reports its
// allocations when asked (testkit.ReportAllocs), and stops on SIGTERM.
//
// It is a module of its own, outside go.work: in workspace mode Go would unify one version of
// every module across the workspace, so kratos' or go-zero's requirements would move the
// versions the services build with. Build it with GOWORK=off; its go.mod pins both frameworks.
//
// What each serves, beside the handler (tracing as the chassis and go-zero ship it: a tracer
// provider that samples every call and exports nothing, since nothing is configured to receive):
//   - kratos: its transport/grpc server with the middleware of kratos-layout and its examples:
//     recovery, logging (kratos-layout's logger, filtered at warn as the chassis runs: no line
//     for a call that succeeds), OpenTelemetry tracing, metrics (its otel metrics middleware
//     into the OpenTelemetry Prometheus exporter) and validate (kratos' validate calls a
//     message's Validate method, which protoc-gen-validate generates; meshmart's messages are
//     checked with protovalidate instead and have none, so it checks nothing here).
//   - go-zero: a zrpc server with every default of RpcServerConf (interceptors: trace, recover,
//     stat, prometheus, breaker, shedding, timeout), except its log level: error, go-zero's
//     nearest to the chassis' warn (it has no warn), so no line is written for a call that
//     succeeds. Its stat interceptor still encodes every request as JSON for that line first.
//
// Both take the same tls.Config as the chassis and bare grpc-go servers (identity.ServerConfig):
// kratos through grpc.TLSConfig, go-zero through RpcServer.AddOptions(grpc.Creds(...)).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	kratoslog "github.com/go-kratos/kratos/v2/log"
	"github.com/go-kratos/kratos/v2/middleware/logging"
	"github.com/go-kratos/kratos/v2/middleware/metrics"
	"github.com/go-kratos/kratos/v2/middleware/recovery"
	"github.com/go-kratos/kratos/v2/middleware/tracing"
	"github.com/go-kratos/kratos/v2/middleware/validate"
	kratosgrpc "github.com/go-kratos/kratos/v2/transport/grpc"
	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/zrpc"
	otelprometheus "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

// listeningPrefix starts the line on which the server prints its address (tools/bench reads it).
const listeningPrefix = "listening "

func main() {
	framework := flag.String("framework", "", "kratos or gozero")
	tlsFiles := flag.String("tls", "", "cert,key,ca of the server's identity; empty: plaintext")
	flag.Parse()
	if err := run(*framework, *tlsFiles); err != nil {
		log.Fatal(err)
	}
}

func run(framework, tlsFiles string) error {
	testkit.ReportAllocs(os.Stdout)
	var creds []grpc.ServerOption
	var kratosTLS []kratosgrpc.ServerOption
	if tlsFiles != "" {
		tc, err := testkit.ServerTLS(tlsFiles)
		if err != nil {
			return err
		}
		creds = append(creds, grpc.Creds(credentials.NewTLS(tc)))
		kratosTLS = append(kratosTLS, kratosgrpc.TLSConfig(tc))
	}
	users := testkit.NewExampleUsers(framework)
	switch framework {
	case "kratos":
		return serveKratos(users, kratosTLS)
	case "gozero":
		return serveGoZero(users, creds)
	}
	return fmt.Errorf("-framework %q: want kratos or gozero", framework)
}

func serveKratos(users userv1.UserServiceServer, opts []kratosgrpc.ServerOption) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := kratoslog.NewFilter(kratoslog.With(kratoslog.NewStdLogger(io.Discard),
		"ts", kratoslog.DefaultTimestamp,
		"caller", kratoslog.DefaultCaller,
		"service.name", "user",
		"trace.id", tracing.TraceID(),
		"span.id", tracing.SpanID(),
	), kratoslog.FilterLevel(kratoslog.LevelWarn))
	exporter, err := otelprometheus.New()
	if err != nil {
		return err
	}
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter)).Meter("user")
	requests, err := metrics.DefaultRequestsCounter(meter, metrics.DefaultServerRequestsCounterName)
	if err != nil {
		return err
	}
	seconds, err := metrics.DefaultSecondsHistogram(meter, metrics.DefaultServerSecondsHistogramName)
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(1))))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := kratosgrpc.NewServer(append(opts,
		kratosgrpc.Listener(lis),
		kratosgrpc.Middleware(
			recovery.Recovery(),
			tracing.Server(tracing.WithTracerProvider(tp)),
			logging.Server(logger),
			metrics.Server(metrics.WithRequests(requests), metrics.WithSeconds(seconds)),
			validate.Validator(),
		))...)
	userv1.RegisterUserServiceServer(srv, users)
	fmt.Println(listeningPrefix + lis.Addr().String())
	go func() {
		<-ctx.Done()
		stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Stop(stopCtx)
	}()
	if err := srv.Start(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// serveGoZero serves until go-zero's own signal handling (core/proc) stops the server on SIGTERM.
func serveGoZero(users userv1.UserServiceServer, opts []grpc.ServerOption) error {
	// zrpc listens on an address of its own: take a free port, give it back and hand it over.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := lis.Addr().String()
	lis.Close()
	var c zrpc.RpcServerConf
	if err := conf.FillDefault(&c); err != nil {
		return err
	}
	c.Name = "user"
	c.ListenOn = addr
	c.Log.Level = "error"
	srv, err := zrpc.NewServer(c, func(s *grpc.Server) { userv1.RegisterUserServiceServer(s, users) })
	if err != nil {
		return err
	}
	srv.AddOptions(opts...)
	served := make(chan struct{})
	go func() { defer close(served); srv.Start() }()
	// zrpc says nothing when it accepts connections: wait until it does.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("go-zero does not accept connections on %s after 30s", addr)
		}
	}
	fmt.Println(listeningPrefix + addr)
	<-served
	return nil
}
