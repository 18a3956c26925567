package interceptors

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"regexp"

	middleware "github.com/grpc-ecosystem/go-grpc-middleware/v2"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// RequestIDKey is the metadata key carrying a request id, in requests and response headers.
const RequestIDKey = "x-request-id"

// validRequestID bounds what a caller may pass as a request id, so a log line cannot be forged or
// bloated through it.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// ValidRequestID reports whether id is a request id the chassis keeps as it is (a caller's
// x-request-id is otherwise replaced): the gateway checks an HTTP client's X-Request-Id with it,
// so that the id it answers with is the one the services log.
func ValidRequestID(id string) bool { return validRequestID.MatchString(id) }

type requestIDKey struct{}

// RequestIDFromContext returns the request id of the call ctx belongs to, or "".
func RequestIDFromContext(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// WithRequestID returns ctx carrying id as the request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID gives every call a request id: the caller's x-request-id when it sent a well-formed
// one, else the id of the trace the call belongs to (from the caller's traceparent, or the span
// the server started), else a new random id of 32 hex digits. The id is stored in the context,
// echoed in the response header and forwarded by the chassis client, so one id follows a request
// across services. go-grpc-middleware v2 has no such interceptor.
func RequestID() Server {
	withID := func(ctx context.Context) context.Context {
		var id string
		if vals := metadata.ValueFromIncomingContext(ctx, RequestIDKey); len(vals) > 0 && ValidRequestID(vals[0]) {
			id = vals[0]
		} else if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
			id = sc.TraceID().String()
		} else {
			id = newRequestID()
		}
		_ = grpc.SetHeader(ctx, metadata.MD{RequestIDKey: {id}})
		return WithRequestID(ctx, id)
	}
	return Server{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			return handler(withID(ctx), req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			wrapped := middleware.WrapServerStream(ss)
			wrapped.WrappedContext = withID(ss.Context())
			return handler(srv, wrapped)
		},
	}
}

// newRequestID returns 128 random bits in hex, as a trace id is written: a UUID's formatting and
// its read of crypto/rand are not needed for an id that only has to be unique.
func newRequestID() string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rand.Uint64())
	var out [32]byte
	hex.Encode(out[:], b[:])
	return string(out[:])
}
