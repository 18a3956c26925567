package platform

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/proc"
)

func TestWaitForPorts(t *testing.T) {
	ports, err := proc.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := waitForPorts(t.Context(), ports, &out); err != nil {
		t.Fatalf("free ports: %v", err)
	}

	// A listener: the platform already runs there; an error at once.
	lis, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ports[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	start := time.Now()
	err = waitForPorts(t.Context(), ports, &out)
	if err == nil || !strings.Contains(err.Error(), strconv.Itoa(ports[0])+" are in use") || time.Since(start) > 5*time.Second {
		t.Fatalf("a listened-on port = %v after %v, want an error at once", err, time.Since(start))
	}

	// An outgoing connection from the port holds it with no listener (as one lingering in
	// TIME-WAIT does, for up to a minute): waited out, not refused.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: ports[1]}}
	conn, err := d.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if probe, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(ports[1])); err == nil {
		probe.Close()
		t.Fatal("a listener could bind a port an open connection holds; the case below would not be tested")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	out.Reset()
	if err := waitForPorts(ctx, ports[1:], &out); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a port held by a connection = %v, want a wait (cut short here)", err)
	}
	if !strings.Contains(out.String(), "waiting for ports "+strconv.Itoa(ports[1])) {
		t.Errorf("no word of the wait: %q", out.String())
	}
}

func TestSetEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name      string
		env, set  []string
		want      []string
		wantValue string
	}{
		{"added", []string{"A=1"}, []string{"B=2"}, []string{"A=1", "B=2"}, "2"},
		{"replaced", []string{"A=1", "B=1", "C=1"}, []string{"B=2"}, []string{"A=1", "C=1", "B=2"}, "2"},
		{"every duplicate replaced", []string{"B=0", "A=1", "B=1"}, []string{"B=2"}, []string{"A=1", "B=2"}, "2"},
		{"emptied", []string{"B=1"}, []string{"B="}, []string{"B="}, ""},
		{"a prefix is another key", []string{"BB=1"}, []string{"B=2"}, []string{"BB=1", "B=2"}, "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := slices.Clone(tc.env)
			got := setEnv(env, tc.set...)
			if !slices.Equal(got, tc.want) {
				t.Errorf("setEnv(%q, %q) = %q, want %q", tc.env, tc.set, got, tc.want)
			}
			if !slices.Equal(env, tc.env) {
				t.Errorf("setEnv changed its argument to %q", env)
			}
			if v, ok := (&Instance{env: got}).Env("B"); !ok || v != tc.wantValue {
				t.Errorf("Env(B) = %q, %v; want %q", v, ok, tc.wantValue)
			}
		})
	}
}
