package app

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// written lives in the binary's writable data, which dropStartupPages must leave alone: dropping a
// private page that was written would bring back the file's value.
var written = 42

// TestDropStartupPages: the pages of the binary resident before are gone after, the process goes
// on running its code and reading its tables (mapped again on use), and its written data keeps
// the values written.
func TestDropStartupPages(t *testing.T) {
	written = 7
	before := binaryRSS(t)
	dropped, err := dropStartupPages()
	if err != nil {
		t.Fatal(err)
	}
	after := binaryRSS(t)
	t.Logf("binary resident: %d KiB before, %d KiB after; %d KiB dropped", before>>10, after>>10, dropped>>10)
	if dropped == 0 || after >= before-dropped/2 {
		t.Errorf("binary resident: %d bytes before, %d after, %d reported dropped; want most of it gone", before, after, dropped)
	}
	if written != 7 {
		t.Errorf("a written variable reads %d after the drop, want 7: a writable page was dropped", written)
	}
	if got := strconv.Itoa(written) + strings.Repeat("!", 2); got != "7!!" {
		t.Errorf("code run after the drop computed %q", got)
	}
}

// binaryRSS sums what /proc/self/smaps reports resident of the process' own binary.
func binaryRSS(t *testing.T) int64 {
	t.Helper()
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var total int64
	mine := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && !strings.HasSuffix(fields[0], ":"):
			mine = len(fields) >= 6 && strings.Join(fields[5:], " ") == exe
		case mine && fields[0] == "Rss:":
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			total += kb << 10
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}
