package interceptors

import (
	"context"
	"errors"

	"buf.build/go/protovalidate"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Validate checks every request message, unary or streamed, against the protovalidate rules in
// its contract. A bad message fails with InvalidArgument carrying an errdetails.BadRequest with one
// field violation per broken rule, plus protovalidate's own Violations for clients that want the
// rule ids.
//
// go-grpc-middleware's protovalidate interceptor attaches only protovalidate's Violations, which
// generic gRPC clients do not read; BadRequest is what every gRPC ecosystem understands.
func Validate(v protovalidate.Validator) Server {
	return Server{
		Unary: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := validate(v, req); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		},
		Stream: func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			return handler(srv, &validatingStream{ServerStream: ss, v: v})
		},
	}
}

type validatingStream struct {
	grpc.ServerStream
	v protovalidate.Validator
}

func (s *validatingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return validate(s.v, m)
}

var _ grpc.ServerStream = (*validatingStream)(nil)

func validate(v protovalidate.Validator, m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "cannot validate a %T", m)
	}
	err := v.Validate(msg)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		// A rule that does not compile is our bug, not the caller's.
		return status.Errorf(codes.Internal, "validation rules of %s: %v", msg.ProtoReflect().Descriptor().FullName(), err)
	}
	st := status.New(codes.InvalidArgument, err.Error())
	br := &errdetails.BadRequest{}
	for _, viol := range verr.Violations {
		field := protovalidate.FieldPathString(viol.Proto.GetField())
		if field == "" {
			field = viol.Proto.GetRuleId()
		}
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       field,
			Description: viol.Proto.GetMessage(),
			Reason:      viol.Proto.GetRuleId(),
		})
	}
	if withDetails, err := st.WithDetails(br, verr.ToProto()); err == nil {
		st = withDetails
	}
	return st.Err()
}
