package app

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/meshmart/meshmart/pkg/server"
)

// DrainSignal asks a running service to drain (see App.Drain): Main relays it to the App from
// the moment the process starts, so that a drain asked for while the service is still starting
// keeps it from ever registering instead of killing it (SIGUSR1's default action).
const DrainSignal = syscall.SIGUSR1

// DrainCommand is the subcommand for a Kubernetes preStop hook:
// `<service> drain [-pid 1] [-drain-delay D]` sends DrainSignal to the service's process (PID 1,
// the container's main process, by default), waits the drain delay and exits 0.
//
// Kubernetes sends SIGTERM when it removes the pod from its Service's endpoints, but meshmart
// clients find instances through Consul: an instance that only starts leaving Consul on SIGTERM
// may still be picked for a while after its connections began to close. With the hook, the
// instance has left Consul and reported NOT_SERVING a whole drain delay before SIGTERM, and the
// stop that follows waits no drain delay again. The binary signals by itself, so the hook works
// in an image without a shell. The drain delay is read as the service reads it
// (-drain-delay, MESHMART_DRAIN_DELAY), so that the hook in the same container waits as long.
const DrainCommand = "drain"

// Drain runs DrainCommand with args and the environment getenv reads; it returns early, with an
// error, when ctx ends.
func Drain(ctx context.Context, args []string, getenv func(string) string) error {
	cfg := server.DefaultConfig("")
	fs := flag.NewFlagSet(DrainCommand, flag.ContinueOnError)
	pid := fs.Int("pid", 1, "the service's process; 1 is a container's main process")
	if _, err := Bind(fs, getenv, &cfg); err != nil {
		return err
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *pid < 1 {
		// kill(2) reads 0 and negative ids as process groups, -1 as every process it may signal.
		return fmt.Errorf("-pid %d: must name one process", *pid)
	}
	if *pid == os.Getpid() {
		return fmt.Errorf("-pid %d is this drain command itself", *pid)
	}
	if err := syscall.Kill(*pid, DrainSignal); err != nil {
		return fmt.Errorf("signal process %d: %w", *pid, err)
	}
	t := time.NewTimer(cfg.DrainDelay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("interrupted before the drain delay (%s) passed: %w", cfg.DrainDelay, ctx.Err())
	}
}

// Drain takes the running App out of rotation without stopping it: the server reports
// NOT_SERVING (to Consul's check and to probes), the registrar stops, so that nothing registers
// the instance again, and the instance leaves Consul, while calls, in flight and new, are still
// served. Run then goes on until its context ends, and stops without waiting the drain delay
// again (only what is left of it). Drain may be called from any goroutine, any number of times,
// before or during Run; an App drained before it serves never registers.
func (a *App) Drain() { a.drainOnce.Do(func() { close(a.drain) }) }

// DrainOn calls Drain whenever c delivers, until c is closed: give it the channel that
// signal.Notify(c, DrainSignal) fills, as Main does.
func (a *App) DrainOn(c <-chan os.Signal) {
	go func() {
		for range c {
			a.Drain()
		}
	}()
}
