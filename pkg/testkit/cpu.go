package testkit

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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
