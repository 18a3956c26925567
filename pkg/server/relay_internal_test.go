package server

import (
	"context"
	"testing"
)

// A trusted forwarder's calls carry no service identity into Identify: the gateway relays users,
// who must prove themselves with their token; every other service keeps its identity.
func TestRelayedAsNoService(t *testing.T) {
	tests := []struct {
		name       string
		peer       string
		forwarders []string
		want       string
	}{
		{"the gateway, a forwarder", "gateway", []string{"gateway"}, ""},
		{"another service", "order", []string{"gateway"}, "order"},
		{"no certificate", "", []string{"gateway"}, ""},
		{"no forwarders configured", "gateway", nil, "gateway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := relayedAsNoService(func(context.Context) string { return tt.peer }, tt.forwarders)
			if got := f(context.Background()); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if relayedAsNoService(nil, []string{"gateway"}) != nil {
		t.Error("a nil peerService stays nil: no caller is a service")
	}
}
