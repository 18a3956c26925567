// Package testkit starts the real components meshmart's tests run against: a Consul dev agent on
// free loopback ports, chassis servers over bufconn or real sockets, a fresh SQLite file, a fresh
// PostgreSQL database (or a PostgreSQL cluster of a test's own, to stop and start), TLS
// certificates and access-token keys, a small example service, child processes, and load loops
// that measure every call.
//
// A component that is missing fails the test with the command that installs it; nothing is
// silently skipped. CI installs everything.
package testkit

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// RepoRoot returns the root of the meshmart checkout the test runs in: the nearest directory above
// the working directory holding go.work.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testkit: no go.work above the working directory; run tests inside the meshmart checkout")
		}
		dir = parent
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// Eventually polls cond every 50 ms until it holds, failing the test with what and cond's last
// description of the state if it still does not after within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() (ok bool, state string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not as expected after %v: %s", what, within, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
