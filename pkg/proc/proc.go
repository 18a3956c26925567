// Package proc starts child processes that die with their parent, and finds them free ports, for
// the test kit and the platform launcher (`make run`).
package proc

import (
	"net"
	"os/exec"
	"runtime"
)

// Start starts cmd and returns a channel closed once it has exited and been waited for.
//
// Linux sends a child's parent-death signal (Pdeathsig) when the OS thread that forked it exits,
// not the process. Go destroys a thread only when a goroutine locked to it exits without
// unlocking; so the fork happens on a thread this goroutine holds locked while the child lives,
// and the thread is unlocked, never destroyed, afterwards. Destroying it would send Pdeathsig to
// every other child that happened to be forked on the same thread.
func Start(cmd *exec.Cmd) (<-chan struct{}, error) {
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

// FreePorts returns n distinct ports free on 127.0.0.1 a moment ago: each is listened on until all
// are found, so that none is handed out twice.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
