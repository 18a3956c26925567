package app_test

import (
	"flag"
	"testing"

	"github.com/meshmart/meshmart/pkg/server"
	"github.com/meshmart/meshmart/pkg/testkit"
)

var update = flag.Bool("update", false, "rewrite the chassis settings in "+testkit.ConfigDoc)

// TestConfigDoc keeps the chassis table of docs/configuration.md in step with server.Config; the
// gRPC address, whose default is each service's own, is shown without one.
func TestConfigDoc(t *testing.T) {
	cfg := server.DefaultConfig("")
	testkit.CheckConfigDoc(t, *update, "chassis", &cfg)
}
