package testkit_test

import (
	"os/exec"
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
