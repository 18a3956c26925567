package main

import (
	"flag"
	"testing"

	"github.com/meshmart/meshmart/pkg/testkit"
)

var update = flag.Bool("update", false, "rewrite the gateway settings in "+testkit.ConfigDoc)

// TestConfigDoc keeps the gateway table of docs/configuration.md in step with the settings struct.
func TestConfigDoc(t *testing.T) { testkit.CheckConfigDoc(t, *update, "gateway", defaults()) }
