package app

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// dropStartupPages unmaps from the process the pages of its own binary that are resident, and
// returns how many bytes they were. It is madvise(MADV_DONTNEED), which the runtime offers for
// the heap only, on the binary's mappings that are not writable and hold no private copy of a
// page (/proc/self/smaps: "Anonymous: 0 kB"): every such page is the file's page-cache page as
// read, so dropping it loses nothing, and the next use maps it again from the cache, as after
// the kernel reclaimed it under memory pressure (which it may do at any time). A writable mapping
// (.data), or one the loader wrote before making it read-only (relocations of a PIE build), is
// left alone. Other processes mapping the binary (the other replicas) keep their pages.
func dropStartupPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, err
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	type mapping struct {
		start, end uintptr
		droppable  bool
		rss        int64
	}
	var all []mapping
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			// A mapping's header: start-end perms offset dev inode [path].
			lo, hi, _ := strings.Cut(fields[0], "-")
			start, err1 := strconv.ParseUint(lo, 16, 64)
			end, err2 := strconv.ParseUint(hi, 16, 64)
			if err1 != nil || err2 != nil {
				continue // a field line whose name has a dash; no mapping header fails to parse
			}
			path := ""
			if len(fields) >= 6 {
				path = strings.Join(fields[5:], " ")
			}
			all = append(all, mapping{start: uintptr(start), end: uintptr(end),
				droppable: path == exe && fields[1][1] != 'w'})
			continue
		}
		if len(all) == 0 || len(fields) < 2 {
			continue
		}
		m := &all[len(all)-1]
		kb, err := strconv.ParseInt(fields[1], 10, 64)
		if err != nil {
			continue
		}
		switch fields[0] {
		case "Rss:":
			m.rss = kb << 10
		case "Anonymous:":
			if kb != 0 {
				m.droppable = false
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	var dropped int64
	for _, m := range all {
		if !m.droppable || m.rss == 0 {
			continue
		}
		// Through the system call itself: syscall.Madvise wants a []byte over the mapping, which
		// only unsafe could make from its address.
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_DONTNEED); errno != 0 {
			return dropped, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, errno)
		}
		// Then one page at a time: otherwise the kernel maps the cached pages around each page
		// used (fault-around, readahead), most of them never used again. Measured on Linux 6.18,
		// the user service idles with 3.4 MiB of its text resident with it, 13 MiB without. The
		// cost is one minor fault per 4 KiB page on its first use, none once the service is warm,
		// and no readahead if the page cache lost the binary under memory pressure.
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_RANDOM); errno != 0 {
			return dropped, fmt.Errorf("madvise random %#x-%#x: %w", m.start, m.end, errno)
		}
		dropped += m.rss
	}
	return dropped, nil
}
