package interceptors

import (
	"context"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/grpc/metadata"
)

// ForwardedForKey is the metadata key in which a trusted forwarder (the REST gateway) names the
// client it calls for. grpc-gateway sets it from the HTTP request: the client's own
// X-Forwarded-For, if any, followed by the address the gateway saw, so only the last element is
// the gateway's word; the others are whatever the browser wrote.
const ForwardedForKey = "x-forwarded-for"

// ClientAddress returns the function that names the address a call comes from, which the
// per-address limits key on: the last element of the call's x-forwarded-for metadata when the
// caller's verified service identity, as peerService reports it (identity.PeerService reads the
// mutual-TLS certificate), is one of trusted; the peer's IP (PeerAddress) otherwise.
//
// Without it every browser behind the gateway would share the gateway's address, and one of them
// could spend everybody's allowance. A header from anyone else (a user's client, which presents
// no certificate, or another service) is ignored, so that nobody escapes a limit by writing one,
// and so is a value that is not an IP address: the call is then the forwarder's own. A nil
// peerService or an empty trusted trusts nobody. The certificate is read only for calls that
// carry the header, so the usual call pays one metadata look-up.
func ClientAddress(peerService func(ctx context.Context) string, trusted []string) func(ctx context.Context) string {
	if peerService == nil || len(trusted) == 0 {
		return PeerAddress
	}
	trusted = slices.Clone(trusted)
	return func(ctx context.Context) string {
		values := metadata.ValueFromIncomingContext(ctx, ForwardedForKey)
		if len(values) == 0 || !slices.Contains(trusted, peerService(ctx)) {
			return PeerAddress(ctx)
		}
		if addr, ok := lastForwarded(values[len(values)-1]); ok {
			return addr
		}
		return PeerAddress(ctx)
	}
}

// lastForwarded parses the last element of an X-Forwarded-For value ("a, b, c"): an IP address,
// with or without a port, returned without the port and an IPv4-mapped IPv6 address as IPv4, so
// that one client is one key however the forwarder wrote it.
func lastForwarded(value string) (string, bool) {
	if i := strings.LastIndexByte(value, ','); i >= 0 {
		value = value[i+1:]
	}
	value = strings.TrimSpace(value)
	addr, err := netip.ParseAddr(value)
	if err != nil {
		ap, perr := netip.ParseAddrPort(value)
		if perr != nil {
			return "", false
		}
		addr = ap.Addr()
	}
	if addr.Zone() != "" {
		return "", false // a zone names an interface of the forwarder's host, not a client
	}
	return addr.Unmap().String(), true
}
