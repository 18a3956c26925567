package main

import (
	"flag"
	"testing"

	"github.com/meshmart/meshmart/pkg/testkit"
)

var update = flag.Bool("update", false, "rewrite the user settings in "+testkit.ConfigDoc)

// TestConfigDoc keeps the user table of docs/configuration.md in step with the settings struct.
func TestConfigDoc(t *testing.T) { testkit.CheckConfigDoc(t, *update, "user", defaults()) }
