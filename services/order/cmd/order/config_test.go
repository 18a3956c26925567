package main

import (
	"flag"
	"testing"

	"github.com/meshmart/meshmart/pkg/testkit"
)

var update = flag.Bool("update", false, "rewrite the order settings in "+testkit.ConfigDoc)

// TestConfigDoc keeps the order table of docs/configuration.md in step with the settings struct.
func TestConfigDoc(t *testing.T) { testkit.CheckConfigDoc(t, *update, "order", defaults()) }
