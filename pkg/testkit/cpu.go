package testkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of /proc/<pid>/stat's times on Linux (USER_HZ).
const userHZ = 100

// CPUTime returns the CPU time (user and system, every thread) process pid has used so far, from
// /proc/<pid>/stat, in steps of 10 ms (USER_HZ).
func CPUTime(pid int) (time.Duration, error) {
	st, err := readStat(pid)
	if err != nil {
		return 0, err
	}
	return st.cpu, nil
}

// DescendantsCPU returns the CPU time the live descendants of this process have used so far:
// the services, databases and agents a test started, and what those started (PostgreSQL's
// backends), but not the test itself.
func DescendantsCPU() (time.Duration, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	stats := map[int]stat{}
	children := map[int][]int{}
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // ended since the glob
		}
		stats[pid] = st
		children[st.ppid] = append(children[st.ppid], pid)
	}
	var total time.Duration
	for todo := children[os.Getpid()]; len(todo) > 0; {
		pid := todo[len(todo)-1]
		todo = append(todo[:len(todo)-1], children[pid]...)
		total += stats[pid].cpu
	}
	return total, nil
}

// DescendantsCPUDuring runs f and returns the CPU time the descendants of this process used
// meanwhile (DescendantsCPU before and after).
func DescendantsCPUDuring(f func()) (time.Duration, error) {
	before, err := DescendantsCPU()
	if err != nil {
		return 0, err
	}
	f()
	after, err := DescendantsCPU()
	return after - before, err
}

// stat is what CPUTime and DescendantsCPU read of /proc/<pid>/stat.
type stat struct {
	ppid int
	cpu  time.Duration
}

func readStat(pid int) (stat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	// The command name (field 2) may hold spaces; the fields after its closing parenthesis start
	// with field 3, state. ppid is field 4, utime and stime are fields 14 and 15.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	if len(f) < 15-3+1 {
		return stat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ppid, err0 := strconv.Atoi(f[4-3])
	utime, err1 := strconv.ParseInt(f[14-3], 10, 64)
	stime, err2 := strconv.ParseInt(f[15-3], 10, 64)
	if err0 != nil || err1 != nil || err2 != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: ppid %q, utime %q, stime %q", pid, f[4-3], f[14-3], f[15-3])
	}
	return stat{ppid: ppid, cpu: time.Duration(utime+stime) * time.Second / userHZ}, nil
}

// Pin restricts every thread of process pid to the given CPUs, as taskset -a does, and returns a
// function that gives every thread pid has by then the affinity it had before (one started since,
// the affinity its process's main thread had). Threads a process starts later inherit the
// affinity of the thread that starts them, so a whole Go process stays pinned. It is how a
// benchmark gives a server a core of its own and its load generator the others, on a machine
// that has no second one to put the generator on.
func Pin(pid int, cpus ...int) (restore func() error, _ error) {
	var set unix.CPUSet
	before := map[int]unix.CPUSet{}
	restore = func() error {
		var errs []error
		for _, tid := range Threads(pid) {
			old, ok := before[tid]
			if !ok {
				old = before[pid]
			}
			if err := unix.SchedSetaffinity(tid, &old); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("thread %d of %d: %w", tid, pid, err))
			}
		}
		return errors.Join(errs...)
	}
	var mainThread unix.CPUSet
	if err := unix.SchedGetaffinity(pid, &mainThread); err != nil {
		return nil, fmt.Errorf("affinity of %d: %w", pid, err)
	}
	before[pid] = mainThread
	for _, c := range cpus {
		set.Set(c)
	}
	// Twice: a thread started while the first pass ran may have copied an unpinned thread.
	for range 2 {
		for _, tid := range Threads(pid) {
			if _, ok := before[tid]; !ok {
				var old unix.CPUSet
				if err := unix.SchedGetaffinity(tid, &old); err != nil {
					continue // ended since Threads read it
				}
				before[tid] = old
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
				return nil, errors.Join(fmt.Errorf("pin thread %d of %d to CPUs %v: %w", tid, pid, cpus, err), restore())
			}
		}
	}
	return restore, nil
}

// Threads lists the thread ids of process pid, from /proc (none once it has ended).
func Threads(pid int) []int {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var tids []int
	for _, task := range tasks {
		if tid, err := strconv.Atoi(task.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids
}
