package observability

import (
	"fmt"
	"log/slog"
	"runtime/debug"
)

// Recover, deferred first thing in a background goroutine (a feed poller, a stream's reader, a
// key sync loop), turns a panic into one ERROR line with the goroutine's name (what), the panic
// value and the stack: the goroutine ends, the process lives on. The interceptors' recovery
// covers handlers only; a panic in a goroutine of its own would otherwise kill the process and
// every call in flight with it. Deferred functions registered before it run after it, so they
// see the goroutine end normally and can tell the goroutine's users that it stopped.
func Recover(log *slog.Logger, what string) {
	if p := recover(); p != nil {
		log.Error("panic in background goroutine", "goroutine", what, "panic", p, "stack", string(debug.Stack()))
	}
}

// Safely calls fn and turns a panic in it into an error (logged as Recover logs it), for a loop
// that should survive one bad iteration (the token key sync retries on its next tick) rather than
// end.
func Safely(log *slog.Logger, what string, fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("panic in background goroutine", "goroutine", what, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("%s: panic: %v", what, p)
		}
	}()
	return fn()
}
