package server

import (
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// The health-only server's limits. A probe is one small Check on a fresh connection every few
// seconds per probe kind, so these leave room for kubelet and a person with grpcurl, and for
// nothing else.
const (
	// healthMaxMsgSize bounds a HealthCheckRequest, which holds one service name.
	healthMaxMsgSize = 1 << 10
	// healthStreams bounds the calls open at once on one connection (Watch streams, mostly).
	healthStreams = 4
	// healthRate and healthBurst are the calls per second allowed per peer address.
	healthRate, healthBurst = 20, 40
	// healthConnAge bounds a connection's life, so that Watch streams cannot hold it for ever;
	// healthConnGrace is how long its calls get to end afterwards.
	healthConnAge, healthConnGrace = time.Minute, 5 * time.Second
)

// HealthServer returns a new gRPC server that serves the server's own health service
// (grpc.health.v1 Check and Watch, the same statuses: NOT_SERVING before SetServing and from
// SetNotServing on, one status per registered service) and nothing else, without TLS, for
// Config.HealthAddr.
//
// It exists because Kubernetes' native gRPC probes cannot speak TLS, while every service port
// serves mutual TLS. It must therefore not widen what a caller without a certificate can do:
// there is no reflection and no other service on it (any other method is Unimplemented), no
// interceptor that could reach a handler, and small limits of its own (1 KiB messages, four calls
// per connection, 20 calls per second per address, connections recycled every minute). It must
// still not be reachable from outside the pod or node: it tells anyone whether the instance is
// up. The caller serves it on its own listener and stops it with Stop after GracefulStop.
func (s *Server) HealthServer() *grpc.Server {
	limit := interceptors.AddressRateLimit(healthRate, healthBurst, interceptors.PeerAddress, s.log, nil)
	hs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(limit.Unary),
		grpc.ChainStreamInterceptor(limit.Stream),
		grpc.MaxRecvMsgSize(healthMaxMsgSize),
		grpc.MaxConcurrentStreams(healthStreams),
		grpc.ConnectionTimeout(5*time.Second),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle: healthConnAge, MaxConnectionAge: healthConnAge, MaxConnectionAgeGrace: healthConnGrace,
		}),
	)
	healthpb.RegisterHealthServer(hs, s.health)
	return hs
}
