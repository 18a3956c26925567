// Package gateway proves the REST gateway (services/gateway) over the real platform: its tests
// start one platform per test binary (Consul, the user, payment and order services and the
// gateway, real processes on loopback) and speak plain net/http to Platform.GatewayURL, as a
// browser or curl would. They check that every google.api.http binding of the contracts answers
// as its RPC, that errors arrive as JSON google.rpc.Status with the HTTP status of their gRPC code
// and their details, CORS, server streams as NDJSON and Server-Sent Events and their cancellation
// reaching the service, the header allow-list and request ids, that the services take the
// client's address from the gateway and not from a spoofed X-Forwarded-For, and that one trace
// spans gateway, order, user and payment.
package gateway
