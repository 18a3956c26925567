package rest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshmart/meshmart/services/gateway/internal/upstream"
)

// errorHandler answers an error of a call, or of decoding its request, with the JSON
// google.rpc.Status of its gRPC status and the HTTP status grpc-gateway maps its code to. An
// error that is no status (none should reach here) is logged and answered as Internal, so that
// no Go error string reaches the client; a failure to reach a service is answered without the
// addresses in its message (upstream.Status; the chassis client logs the original).
func errorHandler(log *slog.Logger) runtime.ErrorHandlerFunc {
	return func(ctx context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
		httpStatus := 0
		var custom *runtime.HTTPStatusError
		if errors.As(err, &custom) {
			err, httpStatus = custom.Err, custom.HTTPStatus
		}
		st, ok := status.FromError(err)
		if !ok {
			if ctxErr := ctx.Err(); ctxErr != nil {
				st = status.FromContextError(ctxErr)
			} else {
				log.ErrorContext(ctx, "unexpected gateway error", "method", r.Method, "path", r.URL.Path, "error", err)
				st = status.New(codes.Internal, "internal error")
			}
		}
		st, _ = upstream.Status(st)
		if httpStatus == 0 {
			httpStatus = runtime.HTTPStatusFromCode(st.Code())
		}
		writeStatus(w, httpStatus, st)
	}
}

// routingErrorHandler answers a request no binding matches: 404 NOT_FOUND for an unknown path,
// 405 UNIMPLEMENTED for a known path with another method, 400 for a malformed one.
func routingErrorHandler(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	var st *status.Status
	switch httpStatus {
	case http.StatusNotFound:
		st = status.Newf(codes.NotFound, "no route for %s %s", r.Method, r.URL.Path)
	case http.StatusMethodNotAllowed:
		st = status.Newf(codes.Unimplemented, "method %s is not allowed on %s", r.Method, r.URL.Path)
	case http.StatusBadRequest:
		st = status.Newf(codes.InvalidArgument, "malformed request path %s", r.URL.Path)
	default:
		st = status.New(codes.Internal, http.StatusText(httpStatus))
	}
	writeStatus(w, httpStatus, st)
}

// writeStatus writes st as JSON (its details included) with httpStatus. Unauthenticated answers
// name the Bearer scheme (RFC 6750); an answer whose details hold a RetryInfo says when to retry
// in Retry-After.
func writeStatus(w http.ResponseWriter, httpStatus int, st *status.Status) {
	body, err := protojson.Marshal(st.Proto())
	if err != nil {
		// A detail whose type is not linked into the gateway cannot be written as JSON: the
		// status goes without its details rather than not at all.
		body, _ = protojson.Marshal(status.New(st.Code(), st.Message()).Proto())
	}
	h := w.Header()
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if st.Code() == codes.Unauthenticated {
		h.Set("Www-Authenticate", "Bearer")
	}
	if after, ok := retryAfter(st); ok {
		h.Set("Retry-After", after)
	}
	w.WriteHeader(httpStatus)
	_, _ = w.Write(body)
}

// retryAfter is the Retry-After value of st's RetryInfo, in whole seconds rounded up.
func retryAfter(st *status.Status) (string, bool) {
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			secs := math.Ceil(ri.GetRetryDelay().AsDuration().Seconds())
			return fmt.Sprint(max(int64(secs), 1)), true
		}
	}
	return "", false
}
