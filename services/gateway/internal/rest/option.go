package rest

import (
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// DefaultMaxBodyBytes is the largest request body accepted unless WithMaxBodyBytes says
// otherwise: 8 MiB.
const DefaultMaxBodyBytes = 8 << 20

// DefaultCORSOrigins are the browser origins allowed across origins unless WithCORSOrigins says
// otherwise: the documented development origins (the gateway on 8080, Vite on 5173, the usual
// dev servers on 3000). The gateway's own origin is allowed in any case.
var DefaultCORSOrigins = []string{"http://localhost:8080", "http://127.0.0.1:8080", "http://localhost:5173", "http://localhost:3000"}

// Option configures New.
type Option interface{ apply(*config) }

type config struct {
	origins []string
	tracer  trace.TracerProvider
	maxBody int64
}

func defaultConfig() config {
	return config{origins: DefaultCORSOrigins, tracer: noop.NewTracerProvider(), maxBody: DefaultMaxBodyBytes}
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithCORSOrigins allows cross-origin requests from exactly origins (scheme://host[:port]) and
// the gateway's own origin, instead of DefaultCORSOrigins; none allows only the gateway's own.
// "*" is refused by New: origins are listed.
func WithCORSOrigins(origins ...string) Option {
	return optionFunc(func(c *config) { c.origins = origins })
}

// WithTracerProvider records the gateway's HTTP spans with tp, continuing a caller's W3C trace
// context. Without it spans are not recorded, but the trace context still reaches the services.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) { c.tracer = tp })
}

// WithMaxBodyBytes bounds request bodies to n bytes instead of DefaultMaxBodyBytes; a larger one
// is refused with 413.
func WithMaxBodyBytes(n int64) Option {
	return optionFunc(func(c *config) { c.maxBody = n })
}
