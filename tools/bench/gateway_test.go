package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
	"github.com/meshmart/meshmart/tools/platform"
)

// The gateway rows put the same call, through the same services, side by side: as REST through
// the gateway (net/http, JSON) and as gRPC straight to the service (the rig's chassis client,
// which verifies the services' certificates as a user's client does). The REST call pays an extra
// hop: HTTP/1.1 and JSON to the gateway, then the gateway's own chassis gRPC call over mutual TLS
// to a replica chosen round robin through consul://. The gateway's CPU time per REST call, read
// from /proc, is what that hop costs the platform.

// restCall is one REST call through the gateway and the same call over gRPC.
type restCall struct {
	name string
	// path is the REST request's path under the gateway's URL (GET, no body).
	path string
	// into is an empty response message the REST body decodes into, as the gRPC client decodes
	// the gRPC answer: both clients end with the same message.
	into func() proto.Message
	// grpc makes the call over gRPC with ctx, which carries the token.
	grpc func(ctx context.Context) (proto.Message, error)
	// token returns the access token to send, or "" for a public call.
	token func() string
}

// gatewayStat is what alternating rounds of one load measured, merged, with the CPU time the
// gateway and the order service's replicas spent meanwhile.
type gatewayStat struct {
	testkit.LoadResult
	gateway, order time.Duration
}

// perCall is d, CPU time spent during the rounds, over the calls they made.
func (s gatewayStat) perCall(d time.Duration) time.Duration {
	return d / time.Duration(max(s.Calls, 1))
}

// restClient is the REST load's HTTP client: one transport shared by every worker, keeping as
// many idle connections to the gateway as there are workers (net/http keeps 2 per host by
// default, which would open and close a connection on most calls under this load).
func restClient(b *testing.B) *http.Client {
	tr := &http.Transport{
		MaxIdleConns:        2 * concurrency,
		MaxIdleConnsPerHost: 2 * concurrency,
		IdleConnTimeout:     time.Minute,
	}
	b.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// rest makes c's REST call through the gateway at base and decodes its answer.
func rest(ctx context.Context, hc *http.Client, base string, c restCall, token string) (proto.Message, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+c.path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	// Reading the body to its end lets the transport reuse the connection.
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", c.path, resp.Status, body)
	}
	m := c.into()
	if err := protojson.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("GET %s: decode %s: %w", c.path, body, err)
	}
	return m, nil
}

// withToken returns ctx carrying token as the gRPC call's bearer token, or ctx itself for a
// public call (token ""): an empty bearer would be refused as an invalid token.
func withToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return loadkit.Account{Token: token}.In(ctx)
}

// gatewayRows measures each call as REST through the gateway and as gRPC straight to the order
// service, in alternating rounds, and fills the gateway rows.
func gatewayRows(b *testing.B, r *loadkit.Rig, user loadkit.Account, col *column) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	placed, err := r.Orders.CreateOrder(user.In(ctx), loadkit.OrderRequest("bench-gateway-"+uuid.NewString()))
	if err != nil {
		b.Fatalf("place the order GetOrder reads: %v", err)
	}
	orderID := placed.GetOrder().GetId()
	calls := []restCall{
		{
			name: "GetProduct",
			path: "/v1/products/BOOK-1",
			into: func() proto.Message { return &orderv1.GetProductResponse{} },
			grpc: func(ctx context.Context) (proto.Message, error) {
				return r.Catalog.GetProduct(ctx, &orderv1.GetProductRequest{Sku: "BOOK-1"})
			},
		},
		{
			name: "GetOrder",
			path: "/v1/orders/" + orderID,
			into: func() proto.Message { return &orderv1.GetOrderResponse{} },
			grpc: func(ctx context.Context) (proto.Message, error) {
				return r.Orders.GetOrder(ctx, &orderv1.GetOrderRequest{Id: orderID})
			},
			token: user.AccessToken,
		},
	}
	hc := restClient(b)
	gateway := r.Instance(platform.Gateway)

	// Both ways must answer the same message before their speeds mean anything.
	for _, c := range calls {
		tok := ""
		if c.token != nil {
			tok = c.token()
		}
		viaREST, err := rest(ctx, hc, r.GatewayURL, c, tok)
		if err != nil {
			b.Fatalf("%s through the gateway: %v", c.name, err)
		}
		viaGRPC, err := c.grpc(withToken(ctx, tok))
		if err != nil {
			b.Fatalf("%s over gRPC: %v", c.name, err)
		}
		if !proto.Equal(viaREST, viaGRPC) {
			b.Fatalf("%s: the gateway answered %v, the service %v", c.name, viaREST, viaGRPC)
		}
	}

	cpu := func(pids ...int) time.Duration {
		var total time.Duration
		for _, pid := range pids {
			d, err := testkit.CPUTime(pid)
			if err != nil {
				b.Fatal(err)
			}
			total += d
		}
		return total
	}
	var orderPids []int
	for _, in := range r.Instances {
		if in.Service == "order" {
			orderPids = append(orderPids, in.Pid())
		}
	}
	// stats[2*i] is calls[i] through the gateway, stats[2*i+1] the same over gRPC.
	stats := make([]gatewayStat, 2*len(calls))
	for range rounds {
		for i, c := range calls {
			for j, viaGateway := range []bool{true, false} {
				// One token per round, as the ghz loads do: renewing it is not part of the call.
				tok := ""
				if c.token != nil {
					tok = c.token()
				}
				callCtx := withToken(context.Background(), tok)
				gw0, order0 := cpu(gateway.Pid()), cpu(orderPids...)
				res := testkit.Load(concurrency, round, func() error {
					ctx, cancel := context.WithTimeout(callCtx, 10*time.Second)
					defer cancel()
					var err error
					if viaGateway {
						_, err = rest(ctx, hc, r.GatewayURL, c, tok)
					} else {
						_, err = c.grpc(ctx)
					}
					return err
				})
				s := &stats[2*i+j]
				s.gateway += cpu(gateway.Pid()) - gw0
				s.order += cpu(orderPids...) - order0
				s.Add(res)
				if res.Errors > 0 {
					b.Errorf("%s (through the gateway: %v): %d of %d calls failed", c.name, viaGateway, res.Errors, res.Calls)
				}
			}
		}
	}
	for i, c := range calls {
		viaREST, viaGRPC := stats[2*i], stats[2*i+1]
		col.set("REST "+c.name, fmt.Sprintf(
			"%.2f× the calls/s of gRPC (%.0f vs %.0f); p50 %v vs %v, p99 %v vs %v; gateway CPU %v per REST call; order service CPU %v vs %v per call",
			viaREST.Rate()/viaGRPC.Rate(), viaREST.Rate(), viaGRPC.Rate(),
			ms(viaREST.Percentile(.5)), ms(viaGRPC.Percentile(.5)), ms(viaREST.Percentile(.99)), ms(viaGRPC.Percentile(.99)),
			us(viaREST.perCall(viaREST.gateway)), us(viaREST.perCall(viaREST.order)), us(viaGRPC.perCall(viaGRPC.order))))
	}
}
