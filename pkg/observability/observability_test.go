package observability_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/trace"

	"github.com/meshmart/meshmart/pkg/observability"
)

// remoteParent is a context continuing a caller's trace, sampled or not.
func remoteParent(sampled bool) context.Context {
	cfg := trace.SpanContextConfig{TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, Remote: true}
	if sampled {
		cfg.TraceFlags = trace.FlagsSampled
	}
	return trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(cfg))
}

// Without an exporter nothing is recorded, not even a span that goes nowhere, but a caller's trace
// context is carried on.
func TestNewTracerProviderWithoutExporter(t *testing.T) {
	// Not parallel: it sets environment variables.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	tp, shutdown, err := observability.NewTracerProvider(context.Background(), "user", "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	defer shutdown()
	_, root := tp.Tracer("test").Start(context.Background(), "work")
	if root.IsRecording() || root.SpanContext().IsValid() {
		t.Errorf("a root span was started with nothing to export it: %v", root.SpanContext())
	}
	_, child := tp.Tracer("test").Start(remoteParent(true), "work")
	if child.IsRecording() || child.SpanContext().TraceID() != (trace.TraceID{1, 2, 3}) {
		t.Errorf("child of a caller's span: recording %v, trace %v; want not recording, the caller's trace",
			child.IsRecording(), child.SpanContext().TraceID())
	}
}

// With an exporter, the default sampler is parentbased_traceidratio at DefaultSampleRatio, and
// the standard OTEL_TRACES_SAMPLER(_ARG) replace it.
func TestNewTracerProviderSampler(t *testing.T) {
	// Not parallel: it sets environment variables.
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317") // nothing listens there
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "100")                    // so shutting down gives up soon
	sampled := func(t *testing.T) (roots int, childOfSampled, childOfUnsampled bool) {
		t.Helper()
		tp, shutdown, err := observability.NewTracerProvider(context.Background(), "user", "v1.2.3")
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown() // shutting down must return, though nothing listens
		tracer := tp.Tracer("test")
		for range 2000 {
			_, span := tracer.Start(context.Background(), "work")
			if span.SpanContext().IsSampled() {
				roots++
			}
			span.End()
		}
		_, a := tracer.Start(remoteParent(true), "work")
		_, b := tracer.Start(remoteParent(false), "work")
		return roots, a.SpanContext().IsSampled(), b.SpanContext().IsSampled()
	}
	t.Run("default", func(t *testing.T) {
		roots, ofSampled, ofUnsampled := sampled(t)
		// 200 expected of 2000 at 0.1; 100 and 400 are beyond 7 standard deviations.
		if roots < 100 || roots > 400 || !ofSampled || ofUnsampled {
			t.Errorf("sampled %d of 2000 roots (want about %v), child of sampled %v, of unsampled %v",
				roots, 2000*observability.DefaultSampleRatio, ofSampled, ofUnsampled)
		}
	})
	t.Run("ratio", func(t *testing.T) {
		t.Setenv("OTEL_TRACES_SAMPLER_ARG", "1")
		if roots, _, _ := sampled(t); roots != 2000 {
			t.Errorf("sampled %d of 2000 roots at a ratio of 1", roots)
		}
	})
	t.Run("always_on", func(t *testing.T) {
		t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
		if roots, _, _ := sampled(t); roots != 2000 {
			t.Errorf("sampled %d of 2000 roots with parentbased_always_on", roots)
		}
	})
	t.Run("bad ratio", func(t *testing.T) {
		t.Setenv("OTEL_TRACES_SAMPLER_ARG", "often")
		if _, _, err := observability.NewTracerProvider(context.Background(), "user", "v1.2.3"); err == nil {
			t.Errorf("OTEL_TRACES_SAMPLER_ARG=often was accepted")
		}
	})
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
