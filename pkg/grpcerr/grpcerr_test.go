package grpcerr_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/grpcerr"
	"github.com/meshmart/meshmart/pkg/testkit"
)

func TestFallback(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := testkit.DiscardLogger()
	tests := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{status.Error(codes.NotFound, "x"), codes.NotFound},
		{fmt.Errorf("query: %w", context.Canceled), codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{errors.New("SELECT secret FROM t: syntax error"), codes.Internal},
	}
	for _, tt := range tests {
		err := grpcerr.Fallback(ctx, log, "the database", tt.err)
		if status.Code(err) != tt.want {
			t.Errorf("Fallback(%v) = %v, want %v", tt.err, err, tt.want)
		}
		if tt.want == codes.Internal && strings.Contains(err.Error(), "secret") {
			t.Errorf("an internal error leaked its cause: %v", err)
		}
	}
	st := status.Convert(grpcerr.InvalidArgument("amount", "must be positive", "amount: must be positive"))
	br, ok := st.Details()[0].(*errdetails.BadRequest)
	if st.Code() != codes.InvalidArgument || !ok || br.GetFieldViolations()[0].GetField() != "amount" {
		t.Errorf("InvalidArgument = %v", st)
	}
}
