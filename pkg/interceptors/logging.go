package interceptors

import (
	"context"
	"log/slog"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// LoggingOption configures Logging.
type LoggingOption func(*loggingConfig)

type loggingConfig struct{ payloads bool }

// WithPayloads makes Logging also log every request and response message, with the fields marked
// debug_redact (passwords, tokens) replaced by "[REDACTED]". Off by default.
func WithPayloads(on bool) LoggingOption { return func(c *loggingConfig) { c.payloads = on } }

// Logging logs one line per call when it finishes: method, code, duration, peer, request id and
// trace id, at a level that follows the code (Info for success and client errors, Warn or Error
// for server faults). Health checks are not logged: Consul makes one every few seconds per
// instance, and metrics count them.
func Logging(log *slog.Logger, opts ...LoggingOption) Server {
	mwOpts := loggingOptions(opts)
	l := slogger(log)
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	return Server{
		Unary:  selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(l, mwOpts...), notHealth),
		Stream: selector.StreamServerInterceptor(logging.StreamServerInterceptor(l, mwOpts...), notHealth),
	}
}

// ClientLogging logs one line per outgoing call when it finishes, like Logging, but successful
// calls only at Debug: the server they reach logs them already.
func ClientLogging(log *slog.Logger, opts ...LoggingOption) Client {
	mwOpts := append(loggingOptions(opts), logging.WithLevels(func(c codes.Code) logging.Level {
		if c == codes.OK {
			return logging.LevelDebug
		}
		return codeToLevel(c)
	}))
	l := slogger(log)
	return Client{
		Unary:  logging.UnaryClientInterceptor(l, mwOpts...),
		Stream: logging.StreamClientInterceptor(l, mwOpts...),
	}
}

func loggingOptions(opts []LoggingOption) []logging.Option {
	var c loggingConfig
	for _, o := range opts {
		o(&c)
	}
	events := []logging.LoggableEvent{logging.FinishCall}
	if c.payloads {
		events = append(events, logging.PayloadReceived, logging.PayloadSent)
	}
	return []logging.Option{
		logging.WithLogOnEvents(events...),
		logging.WithFieldsFromContext(func(ctx context.Context) logging.Fields {
			var f logging.Fields
			if id := RequestIDFromContext(ctx); id != "" {
				f = append(f, "request_id", id)
			}
			if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
				f = append(f, "trace_id", sc.TraceID().String())
			}
			return f
		}),
		logging.WithLevels(codeToLevel),
	}
}

// codeToLevel keeps the log quiet for what the caller got wrong and loud for what we did.
func codeToLevel(code codes.Code) logging.Level {
	switch code {
	case codes.OK, codes.Canceled, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
		codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.Aborted,
		codes.OutOfRange, codes.ResourceExhausted:
		return logging.LevelInfo
	case codes.DeadlineExceeded, codes.Unavailable:
		return logging.LevelWarn
	default:
		return logging.LevelError
	}
}

// logKeys renames go-grpc-middleware's dotted keys to the house's lower_snake_case ones.
var logKeys = map[string]string{
	"grpc.component":        "component",
	"grpc.service":          "service",
	"grpc.method":           "method",
	"grpc.method_type":      "kind",
	"grpc.code":             "code",
	"grpc.time_ms":          "duration_ms",
	"grpc.start_time":       "start_time",
	"grpc.request.deadline": "deadline",
	"grpc.error":            "error",
	"grpc.request.content":  "request",
	"grpc.response.content": "response",
	"peer.address":          "peer",
}

// slogger adapts log to go-grpc-middleware's Logger: keys become lower_snake_case (method, code,
// duration_ms, peer, ...), and message payloads, when logged, are rendered as JSON with their
// debug_redact fields redacted.
func slogger(log *slog.Logger) logging.Logger {
	return logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		attrs := make([]any, 0, len(fields))
		for i := 0; i+1 < len(fields); i += 2 {
			key, _ := fields[i].(string)
			if key == "protocol" {
				continue // always "grpc"
			}
			if k, ok := logKeys[key]; ok {
				key = k
			} else {
				key = strings.ReplaceAll(key, ".", "_")
			}
			val := fields[i+1]
			if m, ok := val.(proto.Message); ok {
				val = redactedJSON(m)
			}
			attrs = append(attrs, key, val)
		}
		log.Log(ctx, slog.Level(lvl), msg, attrs...)
	})
}

func redactedJSON(m proto.Message) string {
	b, err := protojson.MarshalOptions{}.Marshal(Redact(m))
	if err != nil {
		return "[unprintable: " + err.Error() + "]"
	}
	return string(b)
}
