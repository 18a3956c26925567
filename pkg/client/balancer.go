package client

import (
	"context"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/roundrobin"
)

// balancerName is the chassis' load-balancing policy: grpc-go's round_robin, whose picker sends
// a call's hedge (and its retries) to a replica the call has not tried yet.
const balancerName = "meshmart_round_robin"

func init() { balancer.Register(avoidingBuilder{}) }

// avoidingBuilder builds round_robin with an avoidingPicker. Round robin alone sends a second
// attempt to the next replica in its rotation only when nothing else is picked in between; under
// load, other calls take turns meanwhile and a hedge lands on the replica it hedges against once
// in N replicas. grpc-go offers no other way to steer one attempt, so the chassis wraps the picker.
type avoidingBuilder struct{}

func (avoidingBuilder) Name() string { return balancerName }

func (avoidingBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return balancer.Get(roundrobin.Name).Build(avoidingClientConn{cc, &suspects{}}, opts)
}

// avoidingClientConn hands gRPC round_robin's pickers wrapped in an avoidingPicker.
type avoidingClientConn struct {
	balancer.ClientConn
	suspects *suspects
}

func (c avoidingClientConn) UpdateState(s balancer.State) {
	if s.Picker != nil {
		s.Picker = avoidingPicker{s.Picker, c.suspects}
	}
	c.ClientConn.UpdateState(s)
}

// maxRepicks bounds the picks one attempt makes to find a replica its call has not tried.
const maxRepicks = 16

// avoidingPicker picks as round_robin does, but skips, while another replica is ready, a suspect
// replica (see suspects), and, for an attempt of a call that tracks its replicas (withTried: the
// hedged calls), those the call has tried. When every ready replica is to be skipped, it takes
// round robin's first pick.
type avoidingPicker struct {
	balancer.Picker
	suspects *suspects
}

func (p avoidingPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	res, err := p.Picker.Pick(info)
	if err != nil {
		return res, err
	}
	t, _ := info.Ctx.Value(triedKey{}).(*tried)
	now := time.Now()
	avoid := func(sc balancer.SubConn) bool { return (t != nil && t.has(sc)) || p.suspects.suspect(sc, now) }
	first := res
	for i := 0; i < maxRepicks && avoid(res.SubConn); i++ {
		next, err := p.Picker.Pick(info)
		if err != nil || same(next.SubConn, first.SubConn) {
			res = first // round robin came round: every ready replica is to be skipped
			break
		}
		res = next
	}
	if t != nil {
		t.add(res.SubConn, info.Ctx.Value(hedgeKey{}) == nil, p.suspects)
	}
	return res, nil
}

// suspects are the replicas that look hung: their calls went unanswered while hedges to other
// replicas answered, suspectAfter times in a row. Round robin keeps a hung replica until Consul's
// health check fails (a second or more) or keepalive drops it (12s); meanwhile every call sent to
// it would wait for its hedge. A suspect is skipped for suspectFor, then sent calls again: one
// that answers clears its count, one that is hedged again makes it suspect again.
type suspects struct {
	n     atomic.Int32 // len(state): the pick's fast path when no replica is suspect or counted
	mu    sync.Mutex
	state map[balancer.SubConn]*suspicion
}

type suspicion struct {
	losses int       // hedges that answered for it in a row
	until  time.Time // skipped until then
}

const (
	// suspectAfter is how many hedges in a row must answer for a replica before it is skipped:
	// one slow answer (a pause, a cold cache) is what hedging is for, not a hang.
	suspectAfter = 3
	// suspectFor is how long a suspect replica is skipped.
	suspectFor = time.Second
)

// suspect reports whether sc is skipped at now.
func (s *suspects) suspect(sc balancer.SubConn, now time.Time) bool {
	if s == nil || s.n.Load() == 0 || !comparable(sc) {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state[sc]
	return st != nil && now.Before(st.until)
}

// lost records that a hedge answered while sc's attempt had not.
func (s *suspects) lost(sc balancer.SubConn) {
	if s == nil || !comparable(sc) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == nil {
		s.state = map[balancer.SubConn]*suspicion{}
	}
	st := s.state[sc]
	if st == nil {
		now := time.Now()
		for k, v := range s.state { // forget replicas that were suspect and never lost again
			if v.losses == 0 && now.After(v.until) {
				delete(s.state, k)
			}
		}
		st = &suspicion{}
		s.state[sc] = st
		s.n.Store(int32(len(s.state)))
	}
	if st.losses++; st.losses >= suspectAfter {
		st.losses, st.until = 0, time.Now().Add(suspectFor)
	}
}

// answered records that sc answered a call first: it is not hung.
func (s *suspects) answered(sc balancer.SubConn) {
	if s == nil || s.n.Load() == 0 || !comparable(sc) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.state, sc)
	s.n.Store(int32(len(s.state)))
}

// tried are the replicas (subconns) the attempts of one call were sent to.
type tried struct {
	mu       sync.Mutex
	subs     []balancer.SubConn
	first    balancer.SubConn // the first attempt's (its last, when gRPC retried it)
	suspects *suspects
}

// hedgeKey marks the context of a hedge, as opposed to the call's first attempt.
type hedgeKey struct{}

type triedKey struct{}

// withTried makes the call in ctx track the replicas its attempts are sent to, so that each
// attempt goes to a replica not tried yet.
func withTried(ctx context.Context) context.Context {
	return context.WithValue(ctx, triedKey{}, &tried{})
}

func (t *tried) has(sc balancer.SubConn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.subs {
		if same(s, sc) {
			return true
		}
	}
	return false
}

// add records an attempt's replica, and where suspicion is kept.
func (t *tried) add(sc balancer.SubConn, first bool, s *suspects) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs = append(t.subs, sc)
	if first {
		t.first = sc
	}
	t.suspects = s
}

// firstAttempt returns the first attempt's replica and the suspects it counts in, if it picked one.
func (t *tried) firstAttempt() (balancer.SubConn, *suspects) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.first, t.suspects
}

// same reports whether a and b are one subconn. gRPC's are pointers; a value of a type that
// cannot be compared is taken for another subconn rather than make == panic.
func same(a, b balancer.SubConn) bool {
	return comparable(a) && comparable(b) && a == b
}

// comparable reports whether sc can be compared (and be a map key) without a panic.
func comparable(sc balancer.SubConn) bool { return sc != nil && reflect.TypeOf(sc).Comparable() }
