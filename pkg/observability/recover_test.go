package observability_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/observability"
	"github.com/meshmart/meshmart/pkg/testkit"
)

// A panic in a background goroutine is logged (name, value, stack) and ends that goroutine alone;
// Safely turns it into an error for a loop that carries on.
func TestRecover(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&out, nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer observability.Recover(log, "poller")
		panic("boom")
	}()
	<-done
	err := observability.Safely(log, "sync", func() error { panic("bang") })
	if err == nil || !strings.Contains(err.Error(), "bang") {
		t.Errorf("Safely = %v, want an error naming the panic", err)
	}
	if err := observability.Safely(log, "sync", func() error { return nil }); err != nil {
		t.Errorf("Safely without a panic = %v", err)
	}
	for _, want := range []string{`"goroutine":"poller","panic":"boom"`, `"goroutine":"sync","panic":"bang"`, `"stack":"goroutine `} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("log lacks %s:\n%s", want, out.String())
		}
	}
}
