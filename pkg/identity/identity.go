// Package identity gives meshmart services their SPIFFE identities and the mutual TLS built on
// them: every service holds an X.509 SVID naming it (spiffe://<trust domain>/service/<name>) and
// the trust bundle of its trust domain, serves TLS with it, verifies the certificate a client
// presents, and dials other services requiring that they prove the name it asked for.
//
// Identities come from a Source: Files reads PEM files and reloads them when they change (the
// development CA of `make keys`, the launcher and compose, or any CA of your own), and the SPIFFE
// Workload API (SPIRE) gives them with rotation built in (WorkloadAPI). SPIFFE IDs are parsed,
// verified and matched by github.com/spiffe/go-spiffe/v2, never by hand.
package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// DefaultTrustDomain is the trust domain of the development CA.
const DefaultTrustDomain = "meshmart.local"

// servicePrefix is the path under which a trust domain names meshmart services.
const servicePrefix = "/service/"

// ServiceID is the SPIFFE ID of the service called name in trust domain td:
// spiffe://meshmart.local/service/order.
func ServiceID(td spiffeid.TrustDomain, name string) (spiffeid.ID, error) {
	if name == "" || strings.Contains(name, "/") {
		return spiffeid.ID{}, fmt.Errorf("identity: %q is not a service name", name)
	}
	return spiffeid.FromPath(td, servicePrefix+name)
}

// ServiceName returns the service a SPIFFE ID names, and whether it names one.
func ServiceName(id spiffeid.ID) (string, bool) {
	name, ok := strings.CutPrefix(id.Path(), servicePrefix)
	if !ok || name == "" || strings.Contains(name, "/") {
		return "", false
	}
	return name, true
}

// Source is where a workload's identity comes from: its own X.509 SVID and the bundles it trusts.
// Both are asked for on every TLS handshake, so a Source that changes rotates certificates
// without a restart.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// WorkloadAPI returns the identity the SPIFFE Workload API hands this process, at the socket
// addr ("unix:///run/spire/agent.sock"; empty reads SPIFFE_ENDPOINT_SOCKET), kept up to date by
// the agent. Close it when done. It returns once the first SVID arrived or ctx ends.
func WorkloadAPI(ctx context.Context, addr string) (*workloadapi.X509Source, error) {
	var opts []workloadapi.X509SourceOption
	if addr != "" {
		opts = append(opts, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	}
	src, err := workloadapi.NewX509Source(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("identity: SPIFFE Workload API: %w", err)
	}
	return src, nil
}

// Own returns the SPIFFE ID src holds now.
func Own(src x509svid.Source) (spiffeid.ID, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: %w", err)
	}
	return svid.ID, nil
}

// ServerConfig returns the TLS configuration of a server holding src's identity. A client may
// present a certificate or not: one it presents must be an SVID of a service of the server's
// trust domain, verified against src's bundle, or the handshake fails; one it does not present
// leaves the call to prove a user with a bearer token (PeerService then reports none). Plain
// TLS clients such as grpcurl, browsers behind a gateway, and Consul's health check connect
// without one.
func ServerConfig(src Source) (*tls.Config, error) {
	own, err := Own(src)
	if err != nil {
		return nil, err
	}
	verify := tlsconfig.VerifyPeerCertificate(src, serviceOf(own.TrustDomain()))
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: tlsconfig.GetCertificate(src),
		// Go verifies client certificates only against ClientCAs, by hostname-free chains; the
		// SPIFFE verification below replaces it, so Go is told only to ask for one.
		ClientAuth: tls.RequestClientCert,
		VerifyPeerCertificate: func(raw [][]byte, chains [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil // no certificate: not a service; authorization decides per method
			}
			return verify(raw, chains)
		},
	}, nil
}

// ClientConfig returns the TLS configuration of a client that dials the service called server:
// the server must present that service's SVID of td, verified against bundle, whatever its
// address or host name. With svid not nil the client presents its own SVID too (mutual TLS);
// with nil it proves nothing itself (tools, tests, anything calling only with a user's token).
func ClientConfig(svid x509svid.Source, bundle x509bundle.Source, td spiffeid.TrustDomain, server string) (*tls.Config, error) {
	want, err := ServiceID(td, server)
	if err != nil {
		return nil, err
	}
	if svid == nil {
		return tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(want)), nil
	}
	return tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeID(want)), nil
}

// serviceOf accepts the SVIDs of services of td.
func serviceOf(td spiffeid.TrustDomain) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if !id.MemberOf(td) {
			return fmt.Errorf("identity: %s is not of trust domain %s", id, td)
		}
		if _, ok := ServiceName(id); !ok {
			return fmt.Errorf("identity: %s names no service", id)
		}
		return nil
	}
}

// PeerService returns the name of the service whose verified certificate the peer of the call in
// ctx presented, or "" when it presented none (or the connection is not TLS). The certificate was
// verified during the handshake (ServerConfig), so reading it here is enough.
func PeerService(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return ""
	}
	id, err := x509svid.IDFromCert(info.State.PeerCertificates[0])
	if err != nil {
		return ""
	}
	name, _ := ServiceName(id)
	return name
}
