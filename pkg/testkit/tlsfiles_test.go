package testkit

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/identity"
)

// TestServerTLS completes a mutual TLS handshake between ServerTLS's config and a client with
// another service's identity that requires the server's, as the benchmarks' clients dial.
func TestServerTLS(t *testing.T) {
	pki := NewPKI(t, "user", "order")
	cert, key, ca := pki.Files("user")
	server, err := ServerTLS(strings.Join([]string{cert, key, ca}, ","))
	if err != nil {
		t.Fatal(err)
	}
	as := pki.Identity("order")
	client, err := identity.ClientConfig(as, as, TrustDomain(), "user")
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	served := make(chan error, 1)
	go func() { served <- tls.Server(a, server).Handshake() }()
	if err := tls.Client(b, client).Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-served; err != nil {
		t.Fatalf("server handshake: %v", err)
	}

	if _, err := ServerTLS(cert + "," + key); err == nil {
		t.Error("ServerTLS of two files: no error, want one asking for cert,key,ca")
	}
}
