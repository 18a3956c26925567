package platform

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestExclusiveWaitsForAnotherProcess: while another process holds the platform lock, exclusive
// waits, and takes the lock once that process exits.
func TestExclusiveWaitsForAnotherProcess(t *testing.T) {
	if os.Getenv("MESHMART_LOCK_HOLDER") != "" {
		if err := exclusive(io.Discard); err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString("locked\n")
		time.Sleep(2 * time.Second)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExclusiveWaitsForAnotherProcess$")
	cmd.Env = append(os.Environ(), "MESHMART_LOCK_HOLDER=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	lines := bufio.NewScanner(out)
	for lines.Scan() && !strings.Contains(lines.Text(), "locked") {
	}
	go io.Copy(io.Discard, out)
	start := time.Now()
	var said strings.Builder
	if err := exclusive(&said); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("took the lock after %v while another process held it for 2s", waited)
	}
	if !strings.Contains(said.String(), "waiting for another test process") {
		t.Errorf("said %q while waiting", said.String())
	}
	if err := exclusive(io.Discard); err != nil {
		t.Errorf("a second call in the same process: %v", err)
	}
}

// TestExtendDeadline: the wait for the lock moves the start deadline; a cancel still ends it.
func TestExtendDeadline(t *testing.T) {
	parent, cancelParent := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancelParent()
	ctx, cancel := extendDeadline(parent, 5*time.Second)
	defer cancel()
	<-parent.Done()
	if ctx.Err() != nil {
		t.Fatalf("the extended context ended with its parent's deadline: %v", ctx.Err())
	}
	parent2, cancelParent2 := context.WithTimeout(context.Background(), time.Minute)
	ctx2, cancel2 := extendDeadline(parent2, 5*time.Second)
	defer cancel2()
	cancelParent2()
	select {
	case <-ctx2.Done():
	case <-time.After(time.Second):
		t.Fatal("cancelling the parent did not end the extended context")
	}
}
