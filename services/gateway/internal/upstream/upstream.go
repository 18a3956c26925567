// Package upstream holds what the gateway's two edges (REST in package rest, gRPC-Web and Connect
// in package webrpc) share about the calls they forward: which request headers reach the services
// (Headers), and what a browser is told when a call fails before any service answered it (Status).
//
// grpc-go makes those statuses on the gateway's side of the connection, and their messages name
// the gateway's view of the network: "connection error: desc = \"transport: Error while dialing:
// dial tcp 10.0.3.7:50052: connect: connection refused\"", a resolver's Consul address, the
// chassis circuit breaker's target. A client needs only to know that the service is unavailable
// and that trying again is the remedy; the addresses are for the gateway's log. No library marks
// a status as made by the client side, so the messages grpc-go and the chassis client write are
// recognised by their prefixes, which are stable parts of grpc-go's errors.
package upstream

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Headers are the only request headers that reach the services, as the metadata keys they become:
// the caller's access token, the request id the services log, and the W3C trace context.
// Anything else a browser sends (cookies, Grpc-Metadata-* headers, spoofed identities) stays at the
// edge, so that a client cannot set metadata a service might trust.
var Headers = []string{"authorization", "x-request-id", "traceparent", "tracestate"}

// Unavailable is the message a client gets in place of a local failure's.
const Unavailable = "the service is unavailable; try again"

// localPrefixes begin the messages of UNAVAILABLE statuses made by grpc-go (transport, picker,
// resolver) or by the chassis client (its circuit breaker), never by a service.
var localPrefixes = []string{
	"connection error:",
	"last connection error:",
	"last resolver error:",
	"name resolver error:",
	"produced zero addresses",
	"error reading from server:",
	"transport is closing",
	"failed to exit idle mode",
	"circuit breaker for ",
}

// Status returns st as a client may see it: a local failure's status (see the package comment)
// with its message replaced by Unavailable, and true, so that the caller logs the original;
// anything a service answered, unchanged, and false.
func Status(st *status.Status) (*status.Status, bool) {
	if st.Code() != codes.Unavailable {
		return st, false
	}
	for _, p := range localPrefixes {
		if strings.HasPrefix(st.Message(), p) {
			return status.New(codes.Unavailable, Unavailable), true
		}
	}
	return st, false
}
