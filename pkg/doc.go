// Package pkg is the root of meshmart's shared chassis: the service bootstrap, the gRPC server
// runtime, interceptors, the Consul registrar and resolver, the client, access tokens,
// observability, the domain error model and its mapping to gRPC statuses, paging, event-log
// polling, idempotency fingerprints, SQL databases and the test kit that every service builds on. Each concern lives in its own subpackage (README.md
// in this directory maps them); this package itself exports nothing.
package pkg
