package interceptors_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

type callerKey struct{}

// callerService stands in for identity.PeerService: the service the test says the call's
// certificate named.
func callerService(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}

// TestClientAddress checks whose x-forwarded-for is believed: the last element of a trusted
// forwarder's, when it is an IP address; never a user's client's nor another service's.
func TestClientAddress(t *testing.T) {
	t.Parallel()
	addr := interceptors.ClientAddress(callerService, []string{"gateway"})
	for _, tt := range []struct {
		name    string
		service string   // the caller's verified service; "" for a client without a certificate
		xff     []string // x-forwarded-for metadata values
		want    string
	}{
		{"no header", "gateway", nil, "10.0.0.1"},
		{"the gateway's client", "gateway", []string{"203.0.113.7"}, "203.0.113.7"},
		{"only the gateway's own element counts", "gateway", []string{"198.51.100.1, 203.0.113.7"}, "203.0.113.7"},
		{"the last value counts", "gateway", []string{"198.51.100.1", "203.0.113.8"}, "203.0.113.8"},
		{"spaces", "gateway", []string{" 198.51.100.1 ,  203.0.113.7 "}, "203.0.113.7"},
		{"with a port", "gateway", []string{"203.0.113.7:4711"}, "203.0.113.7"},
		{"IPv6", "gateway", []string{"2001:db8::1"}, "2001:db8::1"},
		{"IPv6 with a port", "gateway", []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"IPv4-mapped IPv6 is IPv4", "gateway", []string{"::ffff:203.0.113.7"}, "203.0.113.7"},
		{"not an address", "gateway", []string{"evil"}, "10.0.0.1"},
		{"empty", "gateway", []string{""}, "10.0.0.1"},
		{"last element empty", "gateway", []string{"203.0.113.7,"}, "10.0.0.1"},
		{"a zone", "gateway", []string{"fe80::1%eth0"}, "10.0.0.1"},
		{"a user's client", "", []string{"203.0.113.7"}, "10.0.0.1"},
		{"another service", "order", []string{"203.0.113.7"}, "10.0.0.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5000}})
			ctx = context.WithValue(ctx, callerKey{}, tt.service)
			if tt.xff != nil {
				md := metadata.MD{}
				md.Append(interceptors.ForwardedForKey, tt.xff...)
				ctx = metadata.NewIncomingContext(ctx, md)
			}
			if got := addr(ctx); got != tt.want {
				t.Errorf("ClientAddress from %q with x-forwarded-for %q = %q, want %q", tt.service, tt.xff, got, tt.want)
			}
		})
	}
}

// TestClientAddressTrustsNobody checks that without trusted forwarders, or without a way to know
// the caller, the header never counts.
func TestClientAddressTrustsNobody(t *testing.T) {
	t.Parallel()
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 5000}})
	ctx = context.WithValue(ctx, callerKey{}, "gateway")
	ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(interceptors.ForwardedForKey, "203.0.113.7"))
	for name, addr := range map[string]func(context.Context) string{
		"no trusted forwarders": interceptors.ClientAddress(callerService, nil),
		"no peer service":       interceptors.ClientAddress(nil, []string{"gateway"}),
	} {
		if got := addr(ctx); got != "10.0.0.1" {
			t.Errorf("%s: ClientAddress = %q, want the peer's 10.0.0.1", name, got)
		}
	}
}
