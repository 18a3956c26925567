package testkit

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// allocsPrefix starts the line on which a server process started by a benchmark reports its
// allocations since it started.
const allocsPrefix = "allocs "

// Allocs is what a process has allocated on its heap since it started: runtime.MemStats'
// TotalAlloc and Mallocs, the figures behind go test's -benchmem.
type Allocs struct {
	Bytes   uint64
	Objects uint64
}

// Add returns a+o: what two spans allocated together.
func (a Allocs) Add(o Allocs) Allocs {
	return Allocs{Bytes: a.Bytes + o.Bytes, Objects: a.Objects + o.Objects}
}

// Sub returns a-before: what was allocated between two readings.
func (a Allocs) Sub(before Allocs) Allocs {
	return Allocs{Bytes: a.Bytes - before.Bytes, Objects: a.Objects - before.Objects}
}

// allocsSignal asks a process for its allocations. Not SIGUSR1 or SIGUSR2: the chassis drains on
// SIGUSR1 (app.DrainSignal) and go-zero dumps its goroutines on SIGUSR1 and profiles on SIGUSR2.
// SIGWINCH's default action is to ignore it, so a process that does not report is not harmed.
const allocsSignal = syscall.SIGWINCH

// ReportAllocs makes the calling process answer every SIGWINCH with a line on w giving its
// allocations since it started, for ReadAllocs in the benchmark that started it.
//
// A signal and a line on the output the benchmark already reads are the whole protocol: the
// peer servers (tools/benchpeers) are other modules' programs with no port of meshmart's to ask,
// and runtime.ReadMemStats must run inside the process measured.
func ReportAllocs(w io.Writer) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, allocsSignal)
	go func() {
		for range sig {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Fprintf(w, "%s%d %d\n", allocsPrefix, m.TotalAlloc, m.Mallocs)
		}
	}()
}

// ReadAllocs sends p SIGWINCH and returns the allocations it reports (ReportAllocs) within 10 s.
func ReadAllocs(t testing.TB, p *Process) Allocs {
	t.Helper()
	seen := len(allocLines(p.Logs()))
	if err := p.cmd.Process.Signal(allocsSignal); err != nil {
		t.Fatalf("testkit: signal %s: %v", p.name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if lines := allocLines(p.Logs()); len(lines) > seen {
			var a Allocs
			if _, err := fmt.Sscanf(lines[len(lines)-1], "%d %d", &a.Bytes, &a.Objects); err != nil {
				t.Fatalf("testkit: %s reported allocations as %q: %v", p.name, lines[len(lines)-1], err)
			}
			return a
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("testkit: %s reported no allocations within 10s of SIGWINCH (does it call testkit.ReportAllocs?)", p.name)
	return Allocs{}
}

// allocLines returns what follows allocsPrefix on each line of logs that starts with it.
func allocLines(logs string) []string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), allocsPrefix); ok {
			lines = append(lines, rest)
		}
	}
	return lines
}
