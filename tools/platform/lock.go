package platform

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// lockWait bounds how long a test binary waits for another one's platforms to finish.
const lockWait = 20 * time.Minute

var (
	lockMu   sync.Mutex
	lockFile *os.File // held, never closed: the lock ends with the process
)

// Exclusive is what Start does first when its options ask for FreePorts: it waits, for at most
// 20 minutes, until no other process holds platforms, and then holds them for this process until
// it exits. A test calls it before it sets its own deadline, which the wait must not eat.
func Exclusive(out io.Writer) error { return exclusive(out) }

// exclusive makes the test binaries that start platforms on free ports take turns, one binary
// at a time: `go test` runs two packages at once on two cores, and a platform timed by one
// package (a login flood, a fault under load) measured the other's as much as its own. The lock
// is an flock on a file in the temporary directory, taken on the first Start of a process and held
// until the process exits, however it exits, so its later platforms start without waiting. The
// wait is bounded by lockWait and not by the caller's start deadline, which counts only the start.
func exclusive(out io.Writer) error {
	lockMu.Lock()
	defer lockMu.Unlock()
	if lockFile != nil {
		return nil
	}
	path := filepath.Join(os.TempDir(), "meshmart-platform.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return fmt.Errorf("platform: lock %s: %w", path, err)
	}
	deadline := time.Now().Add(lockWait)
	said := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			lockFile = f
			return nil
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return fmt.Errorf("platform: lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return fmt.Errorf("platform: another test process has held %s for %v", path, lockWait)
		}
		if !said {
			fmt.Fprintf(out, "waiting for another test process's platforms to finish (%s)\n", path)
			said = true
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// extendDeadline returns ctx with its deadline moved by waited, the time spent waiting for the
// lock, which the caller's start deadline does not count; cancelling ctx still ends it.
func extendDeadline(ctx context.Context, waited time.Duration) (context.Context, context.CancelFunc) {
	d, ok := ctx.Deadline()
	if !ok || waited < time.Second {
		return ctx, func() {}
	}
	ext, cancel := context.WithDeadline(context.WithoutCancel(ctx), d.Add(waited))
	stop := context.AfterFunc(ctx, func() {
		if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	return ext, func() { stop(); cancel() }
}
