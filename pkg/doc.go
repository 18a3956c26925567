// Package pkg is the root of meshmart's shared chassis: the server runtime, interceptors, Consul
// registry and resolver, clients, observability and test kit that every service builds on. Each
// concern lives in its own subpackage; this package itself exports nothing.
package pkg
