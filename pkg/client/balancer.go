package client

import (
	"context"
	"reflect"
	"sync"

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
	return balancer.Get(roundrobin.Name).Build(avoidingClientConn{cc}, opts)
}

// avoidingClientConn hands gRPC round_robin's pickers wrapped in an avoidingPicker.
type avoidingClientConn struct{ balancer.ClientConn }

func (c avoidingClientConn) UpdateState(s balancer.State) {
	if s.Picker != nil {
		s.Picker = avoidingPicker{s.Picker}
	}
	c.ClientConn.UpdateState(s)
}

// maxRepicks bounds the picks one attempt makes to find a replica its call has not tried.
const maxRepicks = 16

// avoidingPicker picks as round_robin does, but an attempt of a call that tracks its replicas
// (withTried: the hedged calls) skips those the call has tried while another is ready. When every
// ready replica was tried, it takes round robin's first pick.
type avoidingPicker struct{ balancer.Picker }

func (p avoidingPicker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	res, err := p.Picker.Pick(info)
	t, ok := info.Ctx.Value(triedKey{}).(*tried)
	if err != nil || !ok {
		return res, err
	}
	first := res
	for i := 0; i < maxRepicks && t.has(res.SubConn); i++ {
		next, err := p.Picker.Pick(info)
		if err != nil || same(next.SubConn, first.SubConn) {
			res = first // round robin came round: every ready replica was tried
			break
		}
		res = next
	}
	t.add(res.SubConn)
	return res, nil
}

// tried are the replicas (subconns) the attempts of one call were sent to.
type tried struct {
	mu   sync.Mutex
	subs []balancer.SubConn
}

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

func (t *tried) add(sc balancer.SubConn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.subs = append(t.subs, sc)
}

// same reports whether a and b are one subconn. gRPC's are pointers; a value of a type that
// cannot be compared is taken for another subconn rather than make == panic.
func same(a, b balancer.SubConn) bool {
	if a == nil || b == nil || !reflect.TypeOf(a).Comparable() || !reflect.TypeOf(b).Comparable() {
		return false
	}
	return a == b
}
