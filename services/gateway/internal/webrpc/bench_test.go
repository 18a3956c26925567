package webrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/meshmart/meshmart/pkg/testkit"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/services/gateway/internal/webrpc"
)

// BenchmarkGetUserGRPCWeb measures one unary call over gRPC-Web through the two ways the gateway
// could forward it, in one run, against the same upstream (a bare gRPC server with the example
// service on loopback, so the chassis' interceptors do not drown the difference):
//
//   - connect: this package, connect-go handlers passing binary messages through as bytes to
//     the upstream connection;
//   - vanguard: connectrpc.com/vanguard transcoding gRPC-Web to gRPC, in front of an in-process
//     grpc.Server whose unknown-service handler relays raw frames to the same upstream connection
//     (vanguard needs a handler per service; forwarding needs that raw proxy underneath).
//
// Both figures include the client and the upstream server, which are the same in both. Run it a
// few times, alternating (go test -c, then -test.bench GetUserGRPCWeb in a loop): on a shared
// machine one run's wall times say little.
func BenchmarkGetUserGRPCWeb(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	upstream := grpc.NewServer()
	userv1.RegisterUserServiceServer(upstream, testkit.NewExampleUsers("bench"))
	go func() { _ = upstream.Serve(lis) }()
	b.Cleanup(upstream.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })

	direct, err := webrpc.New(webrpc.Conns{"meshmart.user.v1.UserService": conn})
	if err != nil {
		b.Fatal(err)
	}
	proxy := grpc.NewServer(grpc.ForceServerCodecV2(rawCodec{}), grpc.UnknownServiceHandler(relay(conn)))
	transcoder, err := vanguard.NewTranscoder([]*vanguard.Service{
		vanguard.NewService("meshmart.user.v1.UserService", proxy, vanguard.WithTargetProtocols(vanguard.ProtocolGRPC)),
	})
	if err != nil {
		b.Fatal(err)
	}

	for _, gw := range []struct {
		name    string
		handler http.Handler
	}{{"connect", direct}, {"vanguard", transcoder}} {
		b.Run(gw.name, func(b *testing.B) {
			hs := httptest.NewServer(gw.handler)
			defer hs.Close()
			client := connect.NewClient[userv1.GetUserRequest, userv1.GetUserResponse](
				hs.Client(), hs.URL+userv1.UserService_GetUser_FullMethodName, connect.WithGRPCWeb())
			req := connect.NewRequest(&userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: "ada"}})
			ctx := context.Background()
			if res, err := client.CallUnary(ctx, req); err != nil || res.Msg.GetUser().GetUsername() != "ada" {
				b.Fatalf("GetUser through %s = %v, %v", gw.name, res, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := client.CallUnary(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// rawCodec passes frames through undecoded, for the relay under vanguard.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) { return *(v.(*mem.BufferSlice)), nil }

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	data.Ref()
	*(v.(*mem.BufferSlice)) = data
	return nil
}

func (rawCodec) Name() string { return "proto" }

// relay forwards every call the proxy server receives to conn, frame by frame.
func relay(conn *grpc.ClientConn) grpc.StreamHandler {
	return func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		cs, err := conn.NewStream(ss.Context(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			return err
		}
		for {
			var frame mem.BufferSlice
			if err := ss.RecvMsg(&frame); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return err
			}
			if err := cs.SendMsg(&frame); err != nil {
				return err
			}
		}
		if err := cs.CloseSend(); err != nil {
			return err
		}
		for {
			var frame mem.BufferSlice
			if err := cs.RecvMsg(&frame); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if err := ss.SendMsg(&frame); err != nil {
				return err
			}
		}
	}
}
