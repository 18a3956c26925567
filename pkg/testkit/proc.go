package testkit

import (
	"os/exec"
	"runtime"
)

// startLocked starts cmd and returns a channel closed once it has exited and been waited for.
//
// Linux sends a child's parent-death signal (Pdeathsig) when the OS thread that forked it exits,
// not the process. Go destroys a thread only when a goroutine locked to it exits without
// unlocking; so the fork happens on a thread this goroutine holds locked while the child lives,
// and the thread is unlocked, never destroyed, afterwards. Destroying it would send Pdeathsig to
// every other child that happened to be forked on the same thread.
func startLocked(cmd *exec.Cmd) (<-chan struct{}, error) {
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	return exited, <-started
}
