// Package proc starts child processes that die with their parent, and finds them free ports, for
// the test kit and the platform launcher (`make run`).
package proc

import (
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
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
//
// They are taken below the kernel's ephemeral range when it can be read. A port from that range
// (what listening on port 0 gives) can be handed, once released, to any process's outgoing
// connection before the child that is meant to listen on it binds it; below the range only
// another listener can take it.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	lo, hi := 10000, ephemeralStart()-1
	for tries := 0; len(ports) < n; tries++ {
		addr := "127.0.0.1:0"
		if hi-lo > 1000 && tries < 50*n {
			addr = "127.0.0.1:" + strconv.Itoa(lo+rand.IntN(hi-lo))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr != "127.0.0.1:0" {
				continue // taken: try another
			}
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ephemeralStart is the first port of the kernel's ephemeral range, 0 when unknown.
func ephemeralStart() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return 0
	}
	port, _ := strconv.Atoi(f[0])
	return port
}
