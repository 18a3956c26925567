// Package observability builds the chassis' logger and tracer provider.
//
// Traces are exported over OTLP/gRPC when the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, configured by the exporter's standard environment
// variables, and sampled by the standard OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG, by
// default parent-based with DefaultSampleRatio of the traces that start here. Otherwise no span is
// recorded at all, but a caller's trace context still crosses the process, so its trace id reaches
// the logs and downstream services. Context crosses process boundaries in W3C trace-context and
// baggage headers.
package observability

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// NewLogger returns a logger writing to w at level ("debug", "info", "warn" or "error") in format
// ("json" or "text").
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want json or text", format)
}

// Propagator is the W3C trace-context and baggage propagator every meshmart process uses.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// DefaultSampleRatio is the share of the traces starting in a process (a call that came without a
// sampled trace context) that are recorded and exported when OTEL_TRACES_SAMPLER is not set: a
// trace a caller sampled is always recorded (parentbased_traceidratio). OTEL_TRACES_SAMPLER=
// parentbased_always_on records them all, as before issue 18.
const DefaultSampleRatio = 0.1

// NewTracerProvider returns a tracer provider for service, exporting over OTLP when the standard
// environment asks for it, and a function that flushes and stops it within 5 seconds. When nothing
// is exported it returns a noop.TracerProvider: spans that go nowhere are not worth their cost on
// every call, and a noop span still carries the caller's trace context.
func NewTracerProvider(ctx context.Context, service, version string) (trace.TracerProvider, func(), error) {
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
		return noop.NewTracerProvider(), func() {}, nil
	}
	// Attributes without a schema URL, so they merge with the SDK's defaults whatever semconv
	// version those use; OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME still apply on top.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(service), semconv.ServiceVersion(version)),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, nil, fmt.Errorf("trace resource: %w", err)
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("otlp exporter: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithBatcher(exp)}
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		// The SDK reads OTEL_TRACES_SAMPLER(_ARG) itself, and an explicit sampler would override it.
		ratio := DefaultSampleRatio
		if arg := os.Getenv("OTEL_TRACES_SAMPLER_ARG"); arg != "" {
			if ratio, err = strconv.ParseFloat(arg, 64); err != nil || ratio < 0 || ratio > 1 {
				return nil, nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG=%q: want a ratio from 0 to 1", arg)
			}
		}
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tp.Shutdown(ctx)
	}
	return tp, stop, nil
}

// BuildVersion is the main module's version as the Go toolchain recorded it, or "devel".
func BuildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
