package fault_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/meshmart/meshmart/pkg/fault"
)

var (
	errNotFound = fault.New(fault.NotFound, "order not found")
	errPending  = fault.New(fault.Unavailable, "the order is kept pending")
)

func TestNewAndInvalid(t *testing.T) {
	t.Parallel()
	if errNotFound.Code != fault.NotFound || errNotFound.Error() != "order not found" || errNotFound.Cause() != nil {
		t.Errorf("New = %+v", errNotFound)
	}
	inv := fault.Invalid("items[0]", "quantity must be positive")
	if inv.Code != fault.InvalidArgument || inv.Field != "items[0]" || inv.Reason != "quantity must be positive" ||
		inv.Message != "items[0]: quantity must be positive" || inv.Error() != inv.Message {
		t.Errorf("Invalid = %+v", inv)
	}
	// Two sentinels alike are still two errors.
	if errors.Is(fault.New(fault.NotFound, "order not found"), errNotFound) {
		t.Error("a sentinel matched another sentinel with the same code and message")
	}
	if !errors.Is(errNotFound, errNotFound) {
		t.Error("a sentinel does not match itself")
	}
}

func TestWrap(t *testing.T) {
	t.Parallel()
	cause := errors.New("rpc error: code = Internal desc = secret")
	err := errPending.Wrap(cause)
	if !errors.Is(err, errPending) || !errors.Is(err, cause) || errors.Is(err, errNotFound) {
		t.Errorf("Wrap: Is does not follow the sentinel and the cause: %v", err)
	}
	if err.Message != errPending.Message || err.Code != errPending.Code {
		t.Errorf("Wrap changed the message or code: %+v", err)
	}
	if got, want := err.Error(), "the order is kept pending: rpc error: code = Internal desc = secret"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if err.Cause() != cause || errors.Unwrap(err) != cause {
		t.Errorf("Cause = %v, Unwrap = %v", err.Cause(), errors.Unwrap(err))
	}
	if errPending.Cause() != nil || errPending.Error() != "the order is kept pending" {
		t.Errorf("Wrap modified the sentinel: %q", errPending.Error())
	}
	// A copy of a copy still derives from the sentinel.
	again := err.Wrap(errors.New("other"))
	if !errors.Is(again, errPending) || errors.Is(again, cause) {
		t.Errorf("Wrap of a derived error: %v", again)
	}
	// Wrapped in turn with context, the error is still found.
	outer := fmt.Errorf("create order: %w", err)
	if f, ok := fault.As(outer); !ok || f != err || fault.CodeOf(outer) != fault.Unavailable {
		t.Errorf("As(%v) = %v, %v", outer, f, ok)
	}
}

func TestWithInfo(t *testing.T) {
	t.Parallel()
	a := errPending.WithInfo("order.meshmart", "PAYMENT_PENDING", "order_id", "a")
	b := a.WithInfo("order.meshmart", "PAYMENT_PENDING", "order_id", "b", "attempt", "2")
	if a.Reason != "PAYMENT_PENDING" || a.Domain != "order.meshmart" || len(a.Metadata) != 1 || a.Metadata["order_id"] != "a" {
		t.Errorf("WithInfo = %+v", a)
	}
	if b.Metadata["order_id"] != "b" || b.Metadata["attempt"] != "2" {
		t.Errorf("WithInfo of a derived error = %+v", b)
	}
	if errPending.Reason != "" || errPending.Metadata != nil {
		t.Errorf("WithInfo modified the sentinel: %+v", errPending)
	}
	if !errors.Is(a, errPending) || !errors.Is(b, errPending) {
		t.Error("WithInfo copies do not match their sentinel")
	}
	// Wrapping a copy keeps its details and shares no metadata map with it.
	w := a.Wrap(errors.New("cause"))
	w.Metadata["order_id"] = "changed"
	if a.Metadata["order_id"] != "a" || w.Reason != "PAYMENT_PENDING" {
		t.Errorf("Wrap shares metadata with its source: %+v, %+v", a, w)
	}
	if odd := errPending.WithInfo("d", "R", "lonely"); len(odd.Metadata) != 0 {
		t.Errorf("an odd key without a value was kept: %v", odd.Metadata)
	}
}

func TestCodeOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want fault.Code
	}{
		{nil, fault.Internal},
		{errors.New("plain"), fault.Internal},
		{errNotFound, fault.NotFound},
		{fmt.Errorf("get: %w", errNotFound), fault.NotFound},
		{fault.Invalid("f", "r"), fault.InvalidArgument},
	}
	for _, tt := range tests {
		if got := fault.CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
	if _, ok := fault.As(errors.New("plain")); ok {
		t.Error("As found an *Error in a plain error")
	}
	if fault.Unavailable.String() != "Unavailable" || fault.Code(99).String() != "Code(99)" {
		t.Errorf("Code.String = %q, %q", fault.Unavailable, fault.Code(99))
	}
}
