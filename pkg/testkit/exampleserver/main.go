// Command exampleserver runs testkit's example service on the chassis, as a process of its own, so
// that tests can kill it for real. It takes the chassis' flags and environment, plus -instance.
// It prints "created <request id>" for every CreateUser it handles, then answers after
// -create-latency, so a test can prove that no call was repeated, even by an instance it killed
// between the effect and the answer.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

func main() {
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	cfg := server.DefaultConfig("127.0.0.1:0")
	// The tests that run it load it from one address faster than the per-address limit allows
	// (pkg/consul's failover tests send thousands of calls a second on an idle machine); the limit
	// is tested in pkg/server. -address-rate-limit turns it back on.
	cfg.AddressRateLimit = 0
	fs := flag.NewFlagSet("exampleserver", flag.ExitOnError)
	instance := fs.String("instance", "example", "the name this instance reports in x-served-by")
	createLatency := fs.Duration("create-latency", 0, "how long CreateUser works after recording a call, "+
		"so that a kill can land between the effect and the answer")
	if _, err := app.Bind(fs, nil, &cfg); err != nil {
		return err
	}
	_ = fs.Parse(os.Args[1:])
	logger, err := observability.NewLogger(os.Stderr, cfg.LogLevel, cfg.LogFormat)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	printCreated := interceptors.Server{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if info.FullMethod == userv1.UserService_CreateUser_FullMethodName {
				mu.Lock()
				fmt.Println("created", interceptors.RequestIDFromContext(ctx))
				mu.Unlock()
				time.Sleep(*createLatency)
			}
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, ss)
		},
	}
	srv, err := server.New("example", cfg, logger,
		server.WithInterceptors(printCreated))
	if err != nil {
		return err
	}
	if err := srv.RegisterService(&userv1.UserService_ServiceDesc, testkit.NewExampleUsers(*instance)); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a := app.New(logger)
	a.Serve(srv)
	drain := make(chan os.Signal, 1)
	signal.Notify(drain, app.DrainSignal) // as app.Main does: `drain` subcommands reach it
	a.DrainOn(drain)
	return a.Run(ctx)
}
