// Package fault is meshmart's error model for business rules. An *Error carries a Code that says
// what kind of failure it is, a Message fit for the client, optional details (the request field at
// fault, a machine-readable reason with metadata) and, apart from those, its cause: the cause is
// for the log and never reaches a client.
//
// Domain packages declare their sentinel errors with New and Invalid, knowing nothing of gRPC;
// pkg/grpcerr.ToStatus turns any *Error into a status. A sentinel wrapped with a cause (Wrap) or
// given details (WithInfo) is still errors.Is the sentinel.
package fault

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"time"
)

// Code is the kind of a failure, named as the gRPC code it maps to.
type Code int

// Codes. The zero value, Internal, is a failure that is not the client's to act on.
const (
	Internal Code = iota
	InvalidArgument
	NotFound
	AlreadyExists
	FailedPrecondition
	PermissionDenied
	Unauthenticated
	Aborted
	Unavailable
	ResourceExhausted
)

var codeNames = [...]string{"Internal", "InvalidArgument", "NotFound", "AlreadyExists",
	"FailedPrecondition", "PermissionDenied", "Unauthenticated", "Aborted", "Unavailable", "ResourceExhausted"}

func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.Itoa(int(c)) + ")"
}

// Error is a failure of a business rule. Build sentinels with New or Invalid; derive instances
// from them with Wrap and WithInfo, which copy and never modify the sentinel.
type Error struct {
	// Code is the kind of failure.
	Code Code
	// Message is what the client is told. It never holds a cause's text.
	Message string
	// Field, with InvalidArgument, names the request field at fault (a BadRequest field violation
	// whose description is Reason).
	Field string
	// Reason is a short machine-readable reason in UPPER_SNAKE_CASE (an ErrorInfo reason), or,
	// with Field, the description of the violation.
	Reason string
	// Domain and Metadata qualify Reason (an ErrorInfo's domain and metadata).
	Domain   string
	Metadata map[string]string
	// Violations, with FailedPrecondition, are the preconditions that failed (a
	// PreconditionFailure), so a client can tell which and fix them; see WithViolations.
	Violations []Violation
	// RetryDelay, when positive, is how long the client should wait before trying again (a
	// RetryInfo): a limit that lifts by itself, such as a backoff after failed logins.
	RetryDelay time.Duration

	cause error
	kind  *Error // the sentinel this error derives from; nil for a sentinel
}

// New returns a sentinel error of code with a client-safe message.
func New(code Code, message string) *Error { return &Error{Code: code, Message: message} }

// Invalid returns an InvalidArgument error naming the request field at fault and why.
func Invalid(field, reason string) *Error {
	return &Error{Code: InvalidArgument, Message: field + ": " + reason, Field: field, Reason: reason}
}

// Error returns the message followed by the cause, for logs.
func (e *Error) Error() string {
	if e.cause != nil {
		return e.Message + ": " + e.cause.Error()
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.cause }

// Is reports whether target is the sentinel e derives from.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && e.kind != nil && (t == e.kind)
}

// Cause returns what made e happen, nil when it is a rule of its own.
func (e *Error) Cause() error { return e.cause }

func (e *Error) derive() *Error {
	c := *e
	if c.kind == nil {
		c.kind = e
	}
	c.Metadata = maps.Clone(e.Metadata)
	return &c
}

// Wrap returns a copy of e caused by cause: errors.Is(copy, e) and errors.Is(copy, cause) both
// hold, and the client sees e's message only.
func (e *Error) Wrap(cause error) *Error {
	c := e.derive()
	c.cause = cause
	return c
}

// WithInfo returns a copy of e with a machine-readable reason in domain and metadata given as
// key, value pairs.
func (e *Error) WithInfo(domain, reason string, keyValues ...string) *Error {
	c := e.derive()
	c.Domain, c.Reason = domain, reason
	if len(keyValues) > 0 && c.Metadata == nil {
		c.Metadata = map[string]string{}
	}
	for i := 0; i+1 < len(keyValues); i += 2 {
		c.Metadata[keyValues[i]] = keyValues[i+1]
	}
	return c
}

// Violation is one failed precondition: its Type ("PRICE"), its Subject (what it is about, e.g. a
// SKU) and a Description for people.
type Violation struct{ Type, Subject, Description string }

// WithViolations returns a copy of e listing the preconditions that failed.
func (e *Error) WithViolations(v ...Violation) *Error {
	c := e.derive()
	c.Violations = append(slices.Clone(e.Violations), v...)
	return c
}

// RetryAfter returns a copy of e telling the client to retry after d.
func (e *Error) RetryAfter(d time.Duration) *Error {
	c := e.derive()
	c.RetryDelay = d
	return c
}

// As returns the first *Error in err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// CodeOf returns the code of the first *Error in err's chain, Internal when there is none.
func CodeOf(err error) Code {
	if e, ok := As(err); ok {
		return e.Code
	}
	return Internal
}
