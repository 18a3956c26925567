// Package grpcerr is the one place errors become gRPC statuses. Business rules fail with a
// *fault.Error, which ToStatus turns into its code, its client-safe message and its details
// (BadRequest field violations, ErrorInfo, RetryInfo); anything else is mapped by Fallback: cancellation and
// deadlines keep their codes, an unreachable database is Unavailable, and the rest is Internal. A
// cause's text is logged, never sent: a downstream service's "rpc error: code = ..." reaches no
// client. A transport holds a Mapper, ToStatus bound to its service's logger and database name.
package grpcerr

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshmart/meshmart/pkg/fault"
	"github.com/meshmart/meshmart/pkg/interceptors"
	"github.com/meshmart/meshmart/pkg/sqldb"
)

var codeOf = [...]codes.Code{
	fault.Internal:           codes.Internal,
	fault.InvalidArgument:    codes.InvalidArgument,
	fault.NotFound:           codes.NotFound,
	fault.AlreadyExists:      codes.AlreadyExists,
	fault.FailedPrecondition: codes.FailedPrecondition,
	fault.PermissionDenied:   codes.PermissionDenied,
	fault.Unauthenticated:    codes.Unauthenticated,
	fault.Aborted:            codes.Aborted,
	fault.Unavailable:        codes.Unavailable,
	fault.ResourceExhausted:  codes.ResourceExhausted,
}

// ToStatus maps err for a client: nil stays nil, a *fault.Error becomes its status (its cause, if
// any, logged), and the rest goes to Fallback. what names the service's database in the
// Unavailable message ("the order database").
func ToStatus(ctx context.Context, log *slog.Logger, what string, err error) error {
	if err == nil {
		return nil
	}
	f, ok := fault.As(err)
	// Internal, or a code this package does not know, is not the client's to act on: Fallback
	// logs it and tells the client nothing of it, not even its message.
	if !ok || f.Code <= fault.Internal || int(f.Code) >= len(codeOf) {
		return Fallback(ctx, log, what, err)
	}
	code := codeOf[f.Code]
	if cause := f.Cause(); cause != nil {
		log.WarnContext(ctx, "request failed", "request_id", interceptors.RequestIDFromContext(ctx),
			"code", code.String(), "error", err)
	}
	st := status.New(code, f.Message)
	var details []protoadapt.MessageV1
	if f.Field != "" {
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: f.Field, Description: f.Reason}}})
	} else if f.Reason != "" {
		details = append(details, &errdetails.ErrorInfo{Reason: f.Reason, Domain: f.Domain, Metadata: f.Metadata})
	}
	if len(f.Violations) > 0 {
		pf := &errdetails.PreconditionFailure{}
		for _, v := range f.Violations {
			pf.Violations = append(pf.Violations, &errdetails.PreconditionFailure_Violation{Type: v.Type, Subject: v.Subject, Description: v.Description})
		}
		details = append(details, pf)
	}
	if f.RetryDelay > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(f.RetryDelay)})
	}
	if len(details) > 0 {
		if d, derr := st.WithDetails(details...); derr == nil {
			st = d
		}
	}
	return st.Err()
}

// InvalidArgument returns an InvalidArgument status with msg and a BadRequest naming field.
func InvalidArgument(field, reason, msg string) error {
	st := status.New(codes.InvalidArgument, msg)
	if d, err := st.WithDetails(&errdetails.BadRequest{
		FieldViolations: []*errdetails.BadRequest_FieldViolation{{Field: field, Description: reason}},
	}); err == nil {
		st = d
	}
	return st.Err()
}

// Fallback maps an error no domain rule claimed: nil stays nil, a status made here (not one
// wrapped from a downstream call) passes through, cancellation and deadlines keep their codes, an
// unreachable database is Unavailable (what is a database is told by what), and anything else is
// Internal, with the cause logged and never shown to the caller.
func Fallback(ctx context.Context, log *slog.Logger, what string, err error) error {
	if err == nil {
		return nil
	}
	// Only a status error itself passes: status.FromError would also accept a downstream status
	// wrapped with context, whose text is not for this service's client.
	if _, ok := err.(interface{ GRPCStatus() *status.Status }); ok {
		return err
	}
	rid := interceptors.RequestIDFromContext(ctx)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	case sqldb.Unavailable(err):
		log.WarnContext(ctx, what+" unavailable", "request_id", rid, "error", err)
		return status.Error(codes.Unavailable, what+" is unavailable; retry later")
	default:
		log.ErrorContext(ctx, "internal error", "request_id", rid, "error", err)
		return status.Error(codes.Internal, "internal error")
	}
}

// Mapper is ToStatus for one service: its logger and the name of its database, bound once, so
// that a transport's handlers say only s.errs.Status(ctx, err).
type Mapper struct {
	log  *slog.Logger
	what string
}

// NewMapper returns the Mapper of a service that logs to log and whose database is called what
// ("the order database").
func NewMapper(log *slog.Logger, what string) Mapper { return Mapper{log: log, what: what} }

// Status is ToStatus with m's logger and database name.
func (m Mapper) Status(ctx context.Context, err error) error {
	return ToStatus(ctx, m.log, m.what, err)
}
