package observability_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/meshmart/meshmart/pkg/observability"
)

func TestNewTracerProvider(t *testing.T) {
	// Not parallel: it sets environment variables.
	for _, endpoint := range []string{"", "http://127.0.0.1:4317"} {
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
		tp, shutdown, err := observability.NewTracerProvider(context.Background(), "user", "v1.2.3")
		if err != nil {
			t.Fatalf("endpoint %q: %v", endpoint, err)
		}
		_, span := tp.Tracer("test").Start(context.Background(), "work")
		if !span.SpanContext().IsValid() {
			t.Errorf("endpoint %q: spans are not recorded", endpoint)
		}
		span.End()
		shutdown() // nothing listens on the endpoint; shutting down must still return
	}
}

func TestNewLogger(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := observability.NewLogger(&buf, "warn", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown", "key", "value")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), `"key":"value"`) {
		t.Errorf("log output = %s", buf.String())
	}
	if _, err := observability.NewLogger(&buf, "loud", "json"); err == nil {
		t.Errorf("a bad level was accepted")
	}
	if _, err := observability.NewLogger(&buf, "info", "xml"); err == nil {
		t.Errorf("a bad format was accepted")
	}
}
