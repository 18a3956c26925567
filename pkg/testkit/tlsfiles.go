package testkit

import (
	"crypto/tls"
	"fmt"
	"strings"

	"github.com/meshmart/meshmart/pkg/identity"
)

// ServerTLS returns identity.ServerConfig for the identity in files, "cert,key,ca" (the paths
// PKI.Files returns, joined by commas), as the example servers that the benchmarks start as
// processes of their own take it from an environment variable or a flag.
func ServerTLS(files string) (*tls.Config, error) {
	f := strings.Split(files, ",")
	if len(f) != 3 {
		return nil, fmt.Errorf("testkit: TLS files %q: want cert,key,ca", files)
	}
	src, err := identity.LoadFiles(f[0], f[1], f[2], DiscardLogger())
	if err != nil {
		return nil, err
	}
	return identity.ServerConfig(src)
}
