package main

import (
	"flag"
	"testing"

	"github.com/meshmart/meshmart/pkg/testkit"
)

var update = flag.Bool("update", false, "rewrite the payment settings in "+testkit.ConfigDoc)

// TestConfigDoc keeps the payment table of docs/configuration.md in step with the settings struct.
func TestConfigDoc(t *testing.T) { testkit.CheckConfigDoc(t, *update, "payment", defaults()) }
