package app

import (
	"log/slog"
	"runtime/debug"
	"time"
)

// SettleTime is how long after it started serving a service is trimmed again (see trimStartup):
// by then it has made its first calls and answered its first checks.
const SettleTime = 20 * time.Second

// trimStartup gives back, once the service serves (and again SettleTime later), the heap its
// start-up used and no call needs again. Without it an idle service holds its start-up's garbage
// for as long as it runs: the Go heap grows until its first collection (GOGC), and an idle process
// allocates so little that the collection comes late, if ever before the two-minute forced one;
// the user service's start-up hashes a dummy password with Argon2id, 19 MiB that stays resident
// until then. debug.FreeOSMemory collects and returns the freed pages to the system at once,
// which the runtime's background scavenger would do only slowly and only above its retained
// target.
//
// Nothing else changes: GOGC and GOMEMLIMIT stay the runtime's (or what the environment sets),
// so a service under load collects exactly as before.
func trimStartup(log *slog.Logger) {
	debug.FreeOSMemory()
	log.Debug("start-up memory given back")
}
