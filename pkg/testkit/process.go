package testkit

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/proc"
)

// BuildBinary builds the main package pkg (an import path or a directory) into a temporary file
// and returns its path.
func BuildBinary(t testing.TB, pkg string) string {
	t.Helper()
	name := filepath.Base(pkg)
	if abs, err := filepath.Abs(pkg); err == nil && (pkg == "." || pkg[0] == '.') {
		name = filepath.Base(abs) // a directory such as "." names the binary after itself
	}
	bin := filepath.Join(t.TempDir(), name)
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("testkit: build %s: %v\n%s", pkg, err, out)
	}
	return bin
}

// Process is a program a test runs; its output is shown if the test fails.
type Process struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	logs   *SyncBuffer
	exited <-chan struct{}
}

// StartProcess runs bin with args, and env added to the test's environment. When the test ends
// the process gets SIGTERM and must exit cleanly within 15 seconds; it is killed with the test
// binary in any case.
func StartProcess(t testing.TB, name, bin string, args []string, env ...string) *Process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	p := &Process{t: t, name: name, cmd: cmd, logs: &SyncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	exited, err := proc.Start(cmd)
	if err != nil {
		t.Fatalf("testkit: start %s: %v", name, err)
	}
	p.exited = exited
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("%s output:\n%s", name, p.logs.String())
		}
	})
	return p
}

// Stop sends SIGTERM and waits for a clean exit, failing the test if there is none.
func (p *Process) Stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		if !p.cmd.ProcessState.Success() {
			p.t.Errorf("testkit: %s exited with %v", p.name, p.cmd.ProcessState)
		}
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("testkit: %s did not stop within 15s of SIGTERM", p.name)
	}
}

// Kill ends the process with SIGKILL.
func (p *Process) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Pid is the process's id, for reading what /proc says of it.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Logs returns what the process wrote so far.
func (p *Process) Logs() string { return p.logs.String() }
