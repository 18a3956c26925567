package testkit

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

const allocsHelperEnv = "MESHMART_TESTKIT_ALLOCS_HELPER"

// allocsSink keeps what the helper process allocates reachable, so that the compiler cannot put
// it on the stack.
var allocsSink [][]byte

// TestAllocsHelperProcess is not a test: TestReadAllocs runs the test binary with it as a process
// that reports its allocations and, on SIGUSR1, allocates 1,000 blocks of 1 KiB.
func TestAllocsHelperProcess(t *testing.T) {
	if os.Getenv(allocsHelperEnv) == "" {
		t.Skip("the helper process of TestReadAllocs")
	}
	ReportAllocs(os.Stdout)
	more := make(chan os.Signal, 1)
	signal.Notify(more, syscall.SIGUSR1)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM)
	fmt.Println("ready")
	for {
		select {
		case <-more:
			for range 1000 {
				allocsSink = append(allocsSink[:0:0], make([]byte, 1024))
			}
			fmt.Println("allocated")
		case <-stop:
			os.Exit(0)
		}
	}
}

// TestReadAllocs reads a process's allocations before and after it allocates 1,000 blocks of
// 1 KiB and finds them, and not much more, in the difference.
func TestReadAllocs(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := StartProcess(t, "allocs-helper", bin, []string{"-test.run=^TestAllocsHelperProcess$"}, allocsHelperEnv+"=1")
	Eventually(t, 30*time.Second, "helper ready", func() (bool, string) {
		return strings.Contains(p.Logs(), "ready\n"), p.Logs()
	})
	before := ReadAllocs(t, p)
	if err := p.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, "helper allocated", func() (bool, string) {
		return strings.Contains(p.Logs(), "allocated\n"), p.Logs()
	})
	d := ReadAllocs(t, p).Sub(before)
	// Each round appends to a fresh one-element slice: 2,000 objects, 1,000 of them 1 KiB. The
	// signal's delivery and the lines printed add a few more.
	if d.Objects < 2000 || d.Objects > 2200 {
		t.Errorf("allocated objects = %d, want 2,000 and a few", d.Objects)
	}
	if d.Bytes < 1000*1024 || d.Bytes > 1000*1024+64*1024 {
		t.Errorf("allocated bytes = %d, want 1,024,000 and a little", d.Bytes)
	}
}
