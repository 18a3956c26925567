package app

import (
	"log/slog"
	"runtime/debug"
	"time"
)

// SettleTime is how long after it started serving a service is trimmed again (see trimStartup):
// by then it has made its first calls and answered its first checks.
const SettleTime = 20 * time.Second

// trimStartup gives back, once the service serves (and again SettleTime later), the memory its start-up used and no call
// needs again. Without it an idle service holds on to two things for as long as it runs:
//   - the start-up's garbage, up to as much again as what is live: the Go heap grows until its
//     first collection (GOGC), and an idle process allocates so little that the collection comes
//     late, if ever before the two-minute forced one; the user service's start-up hashes a dummy
//     password with Argon2id, 19 MiB that stays resident until then. debug.FreeOSMemory
//     collects and returns the freed pages to the system at once, which the runtime's background
//     scavenger would do only slowly and only above its retained target.
//   - the binary's pages that only start-up ran or read: every package's init, flag parsing, the
//     migrations, and the function and type tables around them. The kernel maps a file's cached
//     pages 64 KiB around each one touched, so start-up leaves most of the 30-odd MiB of text and
//     tables resident. dropStartupPages unmaps them (see its Linux version); the pages the
//     service goes on using are mapped again on their next use, from the page cache.
//
// Nothing else changes: GOGC and GOMEMLIMIT stay the runtime's (or what the environment sets),
// so a service under load collects exactly as before. It logs what it freed at debug level.
func trimStartup(log *slog.Logger) {
	debug.FreeOSMemory()
	dropped, err := dropStartupPages()
	if err != nil {
		// The memory is only not given back: nothing the service does depends on it.
		log.Warn("could not drop the start-up's pages of the binary", "error", err)
		return
	}
	log.Debug("start-up memory given back", "binary_pages_dropped_bytes", dropped)
}
