package interceptors

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// LoggingOption configures Logging.
type LoggingOption func(*loggingConfig)

type loggingConfig struct {
	payloads bool
	// sample and slow are WithSampling's; sample is 1 (every call) without it.
	sample float64
	slow   time.Duration
}

// newLoggingConfig applies opts to the defaults.
func newLoggingConfig(opts []LoggingOption) loggingConfig {
	c := loggingConfig{sample: 1}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithPayloads makes Logging also log every request and response message, with the fields marked
// debug_redact (passwords, tokens) replaced by "[REDACTED]". Off by default.
func WithPayloads(on bool) LoggingOption { return func(c *loggingConfig) { c.payloads = on } }

// WithSampling makes Logging write the line of a successful unary call for a share of them only,
// at random: share 0.01 logs one in a hundred on average, 1 logs them all. A call that failed,
// took slow or longer, is a stream, or belongs to a sampled trace (whose spans someone keeps) is
// always logged. Without it, or with payload logging on, every call is logged.
//
// At info, the line is most of the chassis' own cost per call (formatting and a write); metrics
// count every call, so a line per success repeats what the request counter already says.
func WithSampling(share float64, slow time.Duration) LoggingOption {
	return func(c *loggingConfig) { c.sample, c.slow = share, slow }
}

// Logging logs one line per call when it finishes: method, code, duration, peer, request id and
// trace id, at a level that follows the code (Info for success and client errors, Warn or Error
// for server faults). Health checks are not logged: Consul makes one every few seconds per
// instance, and metrics count them.
//
// The line is written here rather than by go-grpc-middleware's logging interceptor, which builds
// its field list (and renames nothing: our keys would need a rewrite per call) before the level is
// known, so that a call below the level costs one Enabled check and nothing else, and a logged
// call builds its attributes once, with the house's keys, in the slog.Record itself. With
// WithPayloads, go-grpc-middleware's interceptor logs the messages.
func Logging(log *slog.Logger, opts ...LoggingOption) Server {
	c := newLoggingConfig(opts)
	cl := newCallLogger(log, "server", codeToLevel)
	if !c.payloads {
		cl.sample, cl.slow = c.sample, c.slow
	}
	s := Server{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if isHealth(info.FullMethod) {
				return handler(ctx, req)
			}
			start := time.Now()
			resp, err := handler(ctx, req)
			if err == nil && !cl.keep(ctx, start) {
				return resp, nil
			}
			cl.finished(ctx, cl.unary, info.FullMethod, start, err)
			return resp, err
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if isHealth(info.FullMethod) {
				return handler(srv, ss)
			}
			start := time.Now()
			err := handler(srv, ss)
			kind := cl.bidi
			switch {
			case !info.IsClientStream:
				kind = cl.serverStream
			case !info.IsServerStream:
				kind = cl.clientStream
			}
			cl.finished(ss.Context(), kind, info.FullMethod, start, err)
			return err
		},
	}
	if !c.payloads {
		return s
	}
	// Payload logging is for debugging: go-grpc-middleware's interceptor logs the messages, its
	// keys renamed by slogger, inside the finished-call line's interceptor.
	mwOpts := []logging.Option{
		logging.WithLogOnEvents(logging.PayloadReceived, logging.PayloadSent),
		logging.WithFieldsFromContext(contextFields),
		logging.WithLevels(codeToLevel),
	}
	l := slogger(log)
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	payloadsUnary := selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(l, mwOpts...), notHealth)
	payloadsStream := selector.StreamServerInterceptor(logging.StreamServerInterceptor(l, mwOpts...), notHealth)
	return Server{
		Unary: func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return s.Unary(ctx, req, info, func(ctx context.Context, req any) (any, error) {
				return payloadsUnary(ctx, req, info, handler)
			})
		},
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return s.Stream(srv, ss, info, func(srv any, ss grpc.ServerStream) error {
				return payloadsStream(srv, ss, info, handler)
			})
		},
	}
}

// healthPrefix starts the full method name of every health check.
var healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

func isHealth(fullMethod string) bool { return strings.HasPrefix(fullMethod, healthPrefix) }

// callLogger writes the finished-call line. What is the same for every call of a kind (component
// and kind) is given to the handler once, with Logger.With, so that it is formatted once.
type callLogger struct {
	unary, serverStream, clientStream, bidi *slog.Logger
	level                                   func(codes.Code) logging.Level
	client                                  bool
	// sample is the share of successful unary calls logged when neither slow nor a sampled trace
	// asks for the line (WithSampling); 1 logs them all.
	sample float64
	slow   time.Duration
}

// keep reports whether the successful unary call of ctx that started at start gets its line.
func (cl *callLogger) keep(ctx context.Context, start time.Time) bool {
	switch {
	case cl.sample >= 1:
		return true
	case rand.Float64() < cl.sample:
		return true
	case trace.SpanContextFromContext(ctx).IsSampled():
		return true
	}
	return time.Since(start) >= cl.slow
}

func newCallLogger(log *slog.Logger, component string, level func(codes.Code) logging.Level) *callLogger {
	log = log.With("component", component)
	return &callLogger{
		unary:        log.With("kind", "unary"),
		serverStream: log.With("kind", "server_stream"),
		clientStream: log.With("kind", "client_stream"),
		bidi:         log.With("kind", "bidi_stream"),
		level:        level,
		client:       component == "client",
		sample:       1,
	}
}

// finished logs the end of a call of fullMethod that started at start and ended with err, with
// log, unless its level is disabled: then nothing is built at all.
func (cl *callLogger) finished(ctx context.Context, log *slog.Logger, fullMethod string, start time.Time, err error) {
	code := status.Code(err)
	level := slog.Level(cl.level(code))
	if !log.Enabled(ctx, level) {
		return
	}
	now := time.Now()
	service, method := splitFullMethod(fullMethod)
	// Up to 11 attributes: slog.Record keeps 5 inline and the rest in one slice, allocated once
	// by the single AddAttrs below.
	var attrs [11]slog.Attr
	a := append(attrs[:0],
		slog.String("service", service),
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Float64("duration_ms", float64(now.Sub(start).Microseconds())/1000),
		slog.Time("start_time", start),
	)
	// A client's context holds the peer of the call it serves, if any: not the one it calls.
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil && !cl.client {
		a = append(a, slog.String("peer", p.Addr.String()))
	}
	if id := RequestIDFromContext(ctx); id != "" {
		a = append(a, slog.String("request_id", id))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		a = append(a, slog.String("trace_id", sc.TraceID().String()))
	}
	if d, ok := ctx.Deadline(); ok {
		a = append(a, slog.Time("deadline", d))
	}
	if err != nil {
		a = append(a, slog.String("error", err.Error()))
	}
	r := slog.NewRecord(now, level, "finished call", 0)
	r.AddAttrs(a...)
	_ = log.Handler().Handle(ctx, r)
}

// splitFullMethod splits "/pkg.Service/Method" into "pkg.Service" and "Method" without allocating.
func splitFullMethod(full string) (service, method string) {
	full = strings.TrimPrefix(full, "/")
	if i := strings.LastIndexByte(full, '/'); i >= 0 {
		return full[:i], full[i+1:]
	}
	return "unknown", full
}

// ClientLogging logs one line per outgoing call when it finishes, like Logging, but successful
// calls only at Debug: the server they reach logs them already. A unary call's line is written
// here, as Logging writes the server's (nothing is built below the level); a stream's, and every
// line with payload logging on, by go-grpc-middleware's interceptor, which follows the stream to
// its end.
func ClientLogging(log *slog.Logger, opts ...LoggingOption) Client {
	cfg := newLoggingConfig(opts)
	mwOpts := append(loggingOptions(cfg), logging.WithLevels(clientLevel))
	l := slogger(log)
	c := Client{Stream: logging.StreamClientInterceptor(l, mwOpts...)}
	if cfg.payloads {
		c.Unary = logging.UnaryClientInterceptor(l, mwOpts...)
		return c
	}
	cl := newCallLogger(log, "client", clientLevel)
	c.Unary = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		cl.finished(ctx, cl.unary, method, start, err)
		return err
	}
	return c
}

// clientLevel is codeToLevel, but Debug for success.
func clientLevel(c codes.Code) logging.Level {
	if c == codes.OK {
		return logging.LevelDebug
	}
	return codeToLevel(c)
}

// loggingOptions are go-grpc-middleware's options for the lines c has it write.
func loggingOptions(c loggingConfig) []logging.Option {
	events := []logging.LoggableEvent{logging.FinishCall}
	if c.payloads {
		events = append(events, logging.PayloadReceived, logging.PayloadSent)
	}
	return []logging.Option{
		logging.WithLogOnEvents(events...),
		logging.WithFieldsFromContext(contextFields),
		logging.WithLevels(codeToLevel),
	}
}

// contextFields are the request and trace ids of ctx's call, for go-grpc-middleware's lines.
func contextFields(ctx context.Context) logging.Fields {
	var f logging.Fields
	if id := RequestIDFromContext(ctx); id != "" {
		f = append(f, "request_id", id)
	}
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		f = append(f, "trace_id", sc.TraceID().String())
	}
	return f
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
		if !log.Enabled(ctx, slog.Level(lvl)) {
			return
		}
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
