package identity

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// recheck is how often Files looks at its files again, at most: a handshake costs it one stat per
// file at most once a second.
const recheck = time.Second

// Files is a Source read from PEM files: a certificate (the SVID, leaf first, then any
// intermediates), its private key and the CA bundle of the trust domain. It reloads them when
// any of them changes, so that a certificate rotated on disk (by `make keys`, cert-manager, a
// sidecar) is presented from the next handshake on, with no restart. A change that does not parse
// or does not match (a key written before its certificate) is logged and the last good set kept
// until the files agree. It is safe for concurrent use.
//
// go-spiffe's own x509svid.Load and x509bundle.Load read files once; the watching is ours,
// because go-spiffe's only rotating source is the Workload API.
type Files struct {
	cert, key, ca string
	td            spiffeid.TrustDomain // from the CA-only constructor; else the SVID's
	log           *slog.Logger

	mu      sync.Mutex
	svid    *x509svid.SVID
	bundle  *x509bundle.Bundle
	stamp   [3]stamp
	checked time.Time
}

// stamp tells a changed file from an unchanged one.
type stamp struct {
	size int64
	mod  time.Time
}

// LoadFiles reads the SVID in certFile and keyFile and the CA bundle in caFile, and watches them;
// reloads are logged to log (nil: not logged). The bundle belongs to the SVID's trust domain.
func LoadFiles(certFile, keyFile, caFile string, log *slog.Logger) (*Files, error) {
	f := &Files{cert: certFile, key: keyFile, ca: caFile, log: orDiscard(log)}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

// LoadBundle reads only a CA bundle for trust domain td, for a client that proves nothing itself
// but must verify the services it calls (see ClientConfig). It is watched like LoadFiles'.
func LoadBundle(td spiffeid.TrustDomain, caFile string, log *slog.Logger) (*Files, error) {
	f := &Files{ca: caFile, td: td, log: orDiscard(log)}
	if err := f.load(); err != nil {
		return nil, err
	}
	return f, nil
}

func orDiscard(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return log
}

// GetX509SVID implements x509svid.Source.
func (f *Files) GetX509SVID() (*x509svid.SVID, error) {
	f.refresh()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.svid == nil {
		return nil, fmt.Errorf("identity: %s holds a CA bundle only, no SVID", f.ca)
	}
	return f.svid, nil
}

// GetX509BundleForTrustDomain implements x509bundle.Source.
func (f *Files) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	f.refresh()
	f.mu.Lock()
	defer f.mu.Unlock()
	if td != f.bundle.TrustDomain() {
		return nil, fmt.Errorf("identity: no bundle for trust domain %s (only %s)", td, f.bundle.TrustDomain())
	}
	return f.bundle, nil
}

// TrustDomain is the trust domain of the bundle.
func (f *Files) TrustDomain() spiffeid.TrustDomain {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bundle.TrustDomain()
}

// Close implements io.Closer; Files holds nothing open.
func (f *Files) Close() error { return nil }

func (f *Files) paths() [3]string { return [3]string{f.cert, f.key, f.ca} }

func stamps(paths [3]string) ([3]stamp, error) {
	var s [3]stamp
	for i, p := range paths {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return s, err
		}
		s[i] = stamp{fi.Size(), fi.ModTime()}
	}
	return s, nil
}

// load reads every file; the stamps are taken first, so that a change made while reading is
// seen at the next check.
func (f *Files) load() error {
	st, err := stamps(f.paths())
	if err != nil {
		return fmt.Errorf("identity: %w", err)
	}
	var svid *x509svid.SVID
	td := f.td
	if f.cert != "" {
		if svid, err = x509svid.Load(f.cert, f.key); err != nil {
			return fmt.Errorf("identity: %s and %s: %w", f.cert, f.key, err)
		}
		td = svid.ID.TrustDomain()
	}
	bundle, err := x509bundle.Load(td, f.ca)
	if err != nil {
		return fmt.Errorf("identity: CA bundle %s: %w", f.ca, err)
	}
	f.mu.Lock()
	f.svid, f.bundle, f.stamp, f.checked = svid, bundle, st, time.Now()
	f.mu.Unlock()
	return nil
}

// refresh reloads the files when one changed since the last load, looking at most once per
// recheck.
func (f *Files) refresh() {
	f.mu.Lock()
	if time.Since(f.checked) < recheck {
		f.mu.Unlock()
		return
	}
	f.checked = time.Now()
	old := f.stamp
	f.mu.Unlock()
	st, err := stamps(f.paths())
	if err != nil || st == old {
		return // a file being replaced may be missing for a moment: keep what we have
	}
	if err := f.load(); err != nil {
		f.log.Warn("identity files changed but do not load; keeping the last good ones", "error", err)
		return
	}
	if svid, err := f.GetX509SVID(); err == nil {
		f.log.Info("identity reloaded", "spiffe_id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
	} else {
		f.log.Info("trust bundle reloaded", "ca", f.ca)
	}
}
