package testkit_test

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/testkit"
)

// DescendantsCPU counts what a child's own children burn (PostgreSQL's backends, say), which
// the child's CPUTime does not.
func TestDescendantsCPU(t *testing.T) {
	// A shell that waits for a grandchild spinning for a second; measured for 0.9 s of it.
	cmd := exec.Command("sh", "-c", "timeout 1 sh -c 'while :; do :; done'; sleep 5")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	used, err := testkit.DescendantsCPUDuring(func() {
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() })
		time.Sleep(900 * time.Millisecond)
	})
	if err != nil {
		t.Fatal(err)
	}
	child, err := testkit.CPUTime(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	// The grandchild had most of a second on one of the cores; allow for a busy machine.
	if used < 200*time.Millisecond {
		t.Errorf("descendants used %v while a grandchild spun for 0.9 s, want at least 200ms", used)
	}
	if child > 100*time.Millisecond {
		t.Errorf("the waiting shell itself used %v, want next to nothing", child)
	}
}

// TestPin pins this test's own process, many threads, to one CPU and back: every thread, those
// started while pinned included, is on that CPU alone, and afterwards on the CPUs it had before.
func TestPin(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: pinning to it changes nothing to check")
	}
	pid := os.Getpid()
	was := allowed(t, pid, pid)
	restore, err := testkit.Pin(pid, 1)
	if err != nil {
		t.Fatal(err)
	}
	// A thread started now: the goroutine holds its thread while another one is needed.
	started, done := make(chan struct{}), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		close(started)
		<-done
	}()
	<-started
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { time.Sleep(10 * time.Millisecond) }) // more threads for the runtime to use
	}
	wg.Wait()
	tids := testkit.Threads(pid)
	if len(tids) < 2 {
		t.Fatalf("Threads found %d threads of this process, want several", len(tids))
	}
	for _, tid := range tids {
		if got := allowed(t, pid, tid); got != "1" {
			t.Errorf("thread %d of %d pinned to CPU 1 may run on %q", tid, len(tids), got)
		}
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	close(done)
	after := testkit.Threads(pid)
	if len(after) == 0 {
		t.Fatal("Threads found no thread of this process after restore")
	}
	for _, tid := range after {
		if got := allowed(t, pid, tid); got != was {
			t.Errorf("thread %d may run on %q after restore, want %q as before", tid, got, was)
		}
	}
}

// allowed is thread tid's Cpus_allowed_list, from /proc.
func allowed(t *testing.T, pid, tid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list in /proc/%d/task/%d/status", pid, tid)
	return ""
}
