package platform_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
	"github.com/meshmart/meshmart/pkg/testkit"
	"github.com/meshmart/meshmart/tools/loadkit"
	"github.com/meshmart/meshmart/tools/platform"
)

// idlePrivateLimit is the most memory of its own (RssAnon: heap, stacks, other anonymous
// pages) a process of the platform may hold once it settled: issue 18's 25 MiB. Its resident set
// (VmRSS) is logged beside it and is more: it also counts the pages of the process's binary that
// its running code keeps mapped, some 20-30 MiB here (Consul checks every instance every 2 s and
// the order replicas read the payment service's events every second, each call over mutual TLS
// through the whole chassis). Those pages are the page cache's: every replica of a service maps
// the same ones, and the kernel reclaims them under pressure, so they do not grow with replicas
// or load; BENCHMARKS.md, "Idle memory", has both figures before and after.
const idlePrivateLimit = 25 << 20

// TestIdleMemory starts the platform as `make run` ships it (two replicas of each service, the
// gateway, every setting at its default, SQLite), lets start-up settle (app.SettleTime, when each
// process gives back what its start-up used, and ten seconds more), and asserts that no process
// holds more than idlePrivateLimit of its own: the highest RssAnon of each over ten seconds of
// idling, during which each one's /metrics is scraped as Prometheus would. It measures a shipped
// default; nothing in it is timed.
func TestIdleMemory(t *testing.T) {
	if err := platform.Exclusive(os.Stderr); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	out := &testkit.SyncBuffer{}
	p, err := platform.Start(ctx, platform.Options{Root: testkit.RepoRoot(t), BinDir: t.TempDir(), DataDir: t.TempDir(),
		FreePorts: true, Out: out})
	if err != nil {
		t.Fatalf("start the platform: %v\n%s", err, out)
	}
	defer p.Stop()

	// Settled: every instance registered, fetched the token keys, passed its Consul checks (every
	// 2 s), ran its background work (the reconciler every 5 s, the payment follower every second)
	// a few times, and was trimmed once settled.
	time.Sleep(app.SettleTime + 10*time.Second)
	peak, peakRSS := map[string]int64{}, map[string]int64{}
	for i := range 10 {
		for _, in := range p.Instances {
			if i%5 == 0 {
				scrape(t, in.MetricsAddr)
			}
			own, err := loadkit.PrivateRSS(in.Pid())
			if err != nil {
				t.Fatalf("%s: %v", in.Name, err)
			}
			rss, err := loadkit.RSS(in.Pid())
			if err != nil {
				t.Fatalf("%s: %v", in.Name, err)
			}
			peak[in.Name] = max(peak[in.Name], own)
			peakRSS[in.Name] = max(peakRSS[in.Name], rss)
		}
		time.Sleep(time.Second)
	}
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	for _, in := range p.Instances {
		t.Logf("%-9s idle: %.1f MiB of its own (RssAnon), %.1f MiB resident with its binary's pages (VmRSS)",
			in.Name, mib(peak[in.Name]), mib(peakRSS[in.Name]))
		if peak[in.Name] > idlePrivateLimit {
			t.Errorf("%s holds %.1f MiB of its own at idle, want at most %d MiB", in.Name, mib(peak[in.Name]), idlePrivateLimit>>20)
		}
	}
	select {
	case name := <-p.Died():
		t.Errorf("%s exited while idling:\n%s", name, out)
	default:
	}
}

// scrape reads the instance's /metrics once, as Prometheus does every interval.
func scrape(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", addr, resp.Status)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
}
