package grpcerr_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/fault"
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

func TestToStatusCodes(t *testing.T) {
	t.Parallel()
	want := map[fault.Code]codes.Code{
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
	for fc, gc := range want {
		t.Run(fc.String(), func(t *testing.T) {
			t.Parallel()
			sentinel := fault.New(fc, "the message for the client")
			for _, err := range []error{sentinel, fmt.Errorf("context: %w", sentinel), sentinel.Wrap(errors.New("secret cause"))} {
				st := status.Convert(grpcerr.ToStatus(context.Background(), testkit.DiscardLogger(), "the database", err))
				if st.Code() != gc || st.Message() != "the message for the client" || len(st.Details()) != 0 {
					t.Errorf("ToStatus(%v) = %v, want %v with the sentinel's message and no details", err, st, gc)
				}
			}
		})
	}
	if grpcerr.ToStatus(context.Background(), testkit.DiscardLogger(), "the database", nil) != nil {
		t.Error("ToStatus(nil) is not nil")
	}
	// A code with no mapping of its own is Internal, told nothing.
	st := status.Convert(grpcerr.ToStatus(context.Background(), testkit.DiscardLogger(), "the database", fault.New(fault.Code(99), "odd secret")))
	if st.Code() != codes.Internal || strings.Contains(st.Message(), "secret") {
		t.Errorf("an unknown code = %v", st)
	}
}

func TestToStatusDetails(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	log := testkit.DiscardLogger()

	st := status.Convert(grpcerr.ToStatus(ctx, log, "the database", fmt.Errorf("create: %w", fault.Invalid("items[1]", "quantity must be positive"))))
	if st.Code() != codes.InvalidArgument || st.Message() != "items[1]: quantity must be positive" || len(st.Details()) != 1 {
		t.Fatalf("invalid = %v", st)
	}
	br, ok := st.Details()[0].(*errdetails.BadRequest)
	if !ok || len(br.GetFieldViolations()) != 1 || br.GetFieldViolations()[0].GetField() != "items[1]" ||
		br.GetFieldViolations()[0].GetDescription() != "quantity must be positive" {
		t.Errorf("BadRequest = %v", st.Details()[0])
	}

	pending := fault.New(fault.Unavailable, "the order is kept pending")
	err := pending.WithInfo("order.meshmart", "PAYMENT_PENDING", "order_id", "o-1").Wrap(status.Error(codes.Internal, "secret-downstream-text"))
	st = status.Convert(grpcerr.ToStatus(ctx, log, "the database", err))
	if st.Code() != codes.Unavailable || st.Message() != "the order is kept pending" || len(st.Details()) != 1 {
		t.Fatalf("pending = %v", st)
	}
	info, ok := st.Details()[0].(*errdetails.ErrorInfo)
	if !ok || info.GetReason() != "PAYMENT_PENDING" || info.GetDomain() != "order.meshmart" || info.GetMetadata()["order_id"] != "o-1" {
		t.Errorf("ErrorInfo = %v", st.Details()[0])
	}

	mismatch := fault.New(fault.FailedPrecondition, "the prices differ")
	err = mismatch.WithViolations(fault.Violation{Type: "PRICE", Subject: "BOOK-1", Description: "sent 1, catalog 1999 USD"})
	if mismatch.Violations != nil || !errors.Is(err, mismatch) {
		t.Fatalf("WithViolations changed the sentinel or lost it: %v", mismatch.Violations)
	}
	st = status.Convert(grpcerr.ToStatus(ctx, log, "the database", err))
	if st.Code() != codes.FailedPrecondition || st.Message() != "the prices differ" || len(st.Details()) != 1 {
		t.Fatalf("mismatch = %v", st)
	}
	pf, ok := st.Details()[0].(*errdetails.PreconditionFailure)
	if !ok || len(pf.GetViolations()) != 1 || pf.GetViolations()[0].GetType() != "PRICE" || pf.GetViolations()[0].GetSubject() != "BOOK-1" ||
		pf.GetViolations()[0].GetDescription() != "sent 1, catalog 1999 USD" {
		t.Errorf("PreconditionFailure = %v", st.Details()[0])
	}

	busy := fault.New(fault.ResourceExhausted, "too many logins at once").RetryAfter(1500 * time.Millisecond)
	st = status.Convert(grpcerr.ToStatus(ctx, log, "the database", busy))
	if st.Code() != codes.ResourceExhausted || len(st.Details()) != 1 {
		t.Fatalf("busy = %v", st)
	}
	if ri, ok := st.Details()[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != 1500*time.Millisecond {
		t.Errorf("RetryInfo = %v", st.Details()[0])
	}
}

// TestToStatusHidesCauses checks that a cause's text is logged and never sent, whatever it is.
func TestToStatusHidesCauses(t *testing.T) {
	t.Parallel()
	downstream := status.Error(codes.Internal, "secret-downstream-text")
	unavailable := fault.New(fault.Unavailable, "a service the order depends on is unavailable; retry later")
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"a fault with a downstream cause", unavailable.Wrap(fmt.Errorf("charge the order: %w", downstream)), codes.Unavailable},
		{"a downstream status wrapped with context", fmt.Errorf("charge the order: %w", downstream), codes.Internal},
		{"a downstream Unavailable wrapped with context", fmt.Errorf("charge: %w", status.Error(codes.Unavailable, "secret-downstream-text")), codes.Internal},
		{"an Internal fault with a cause", fault.New(fault.Internal, "secret-internal-message").Wrap(errors.New("secret-downstream-text")), codes.Internal},
		{"a plain error", errors.New("SELECT secret-downstream-text FROM t"), codes.Internal},
		{"a closed database", fmt.Errorf("get order: %w", sql.ErrConnDone), codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var logged bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logged, nil))
			err := grpcerr.ToStatus(context.Background(), log, "the order database", tt.err)
			st := status.Convert(err)
			if st.Code() != tt.want {
				t.Errorf("code = %v, want %v", st.Code(), tt.want)
			}
			if strings.Contains(st.Message(), "secret") || strings.Contains(st.Message(), "rpc error") {
				t.Errorf("the cause reached the client: %v", err)
			}
			if !strings.Contains(logged.String(), tt.err.Error()) && !strings.Contains(logged.String(), strconv.Quote(tt.err.Error())) {
				t.Errorf("the cause was not logged; the log holds %q", logged.String())
			}
		})
	}
}
