package client

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/meshmart/meshmart/pkg/interceptors"
)

// HedgeSettings tune hedged reads (see WithHedging). A zero field takes its default.
type HedgeSettings struct {
	// Disable turns hedging off: every call is sent once (and retried under RetryPolicy).
	Disable bool
	// Quantile of the method's recent latencies after which a call that has not answered is sent
	// again, to another replica; default 0.95, so about one call in twenty is hedged when every
	// replica is well.
	Quantile float64
	// MinDelay is the shortest wait before a hedge, whatever the method's latency; default 2ms,
	// so that a fast method is not hedged on scheduling noise.
	MinDelay time.Duration
	// MaxDelay is the longest wait before a hedge, and the wait until the method has answered
	// 20 calls; default 500ms.
	MaxDelay time.Duration
	// Ratio caps the extra load: each call earns Ratio tokens and each hedge costs one, so in the
	// long run at most Ratio extra calls are sent per call; default 0.1 (10%).
	Ratio float64
	// Burst is the most tokens the bucket holds (it starts full): the hedges that may be sent at
	// once when a replica hangs under load; default 100.
	Burst float64
}

// WithHedging tunes hedged reads. By default a unary call to a method whose idempotency_level is
// NO_SIDE_EFFECTS that has not answered within the 95th percentile of the method's recent
// latencies (at least 2ms, at most 500ms) is sent a second time, to another replica; the first
// answer wins and the other attempt is cancelled. Hedges are capped at 10% of the calls (with a
// burst of 100). Methods with side effects, IDEMPOTENT ones included, and streams are never hedged.
func WithHedging(s HedgeSettings) Option {
	return optionFunc(func(o *options) { o.hedge = s })
}

func (s HedgeSettings) withDefaults() HedgeSettings {
	if s.Quantile <= 0 || s.Quantile > 1 {
		s.Quantile = 0.95
	}
	if s.MinDelay <= 0 {
		s.MinDelay = 2 * time.Millisecond
	}
	if s.MaxDelay <= 0 {
		s.MaxDelay = 500 * time.Millisecond
	}
	s.MaxDelay = max(s.MaxDelay, s.MinDelay)
	if s.Ratio <= 0 {
		s.Ratio = 0.1
	}
	if s.Burst < 1 {
		s.Burst = 100
	}
	return s
}

// Hedgeable returns the full names ("/package.Service/Method", as gRPC calls them) of the methods
// in files that may be hedged: those whose idempotency_level is NO_SIDE_EFFECTS, and unary.
func Hedgeable(files *protoregistry.Files) []string {
	var names []string
	rangeMethods(files, func(svc protoreflect.ServiceDescriptor, m protoreflect.MethodDescriptor, level descriptorpb.MethodOptions_IdempotencyLevel) {
		if level == descriptorpb.MethodOptions_NO_SIDE_EFFECTS && !m.IsStreamingClient() && !m.IsStreamingServer() {
			names = append(names, "/"+string(svc.FullName())+"/"+string(m.Name()))
		}
	})
	slices.Sort(names)
	return names
}

// hedger sends a second attempt of a slow read to another replica. grpc-go parses a service
// config's hedgingPolicy but does not implement it (only retryPolicy), and its policy would hedge
// after a fixed delay; so the chassis hedges itself, after a delay that follows each method's
// latency. The second attempt goes through the same ClientConn: the balancer (avoidingPicker)
// sends it to a replica the call has not tried yet.
type hedger struct {
	settings HedgeSettings
	methods  map[string]*latencies // read-only after newHedger
	bucket   *tokenBucket
	hedges   prometheus.Counter // nil without a registry
}

func newHedger(s HedgeSettings, files *protoregistry.Files, hedges prometheus.Counter) *hedger {
	s = s.withDefaults()
	h := &hedger{settings: s, methods: map[string]*latencies{}, bucket: newTokenBucket(s.Burst, s.Ratio), hedges: hedges}
	for _, m := range Hedgeable(files) {
		h.methods[m] = newLatencies(s)
	}
	return h
}

// interceptor hedges unary calls to hedgeable methods; streams pass through.
func (h *hedger) interceptor() interceptors.Client {
	return interceptors.Client{
		Unary: h.unary,
		Stream: func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(ctx, desc, cc, method, opts...)
		},
	}
}

// hedge is the second attempt of one call.
type hedge struct {
	mu      sync.Mutex
	started bool
	decided bool // an attempt won: the other must not claim the call
	won     bool // the hedge won
	cancel  context.CancelFunc
	done    chan struct{} // closed when the hedge returned; err and reply are then set
	err     error
	reply   proto.Message
}

func (h *hedger) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	lat := h.methods[method]
	msg, isProto := reply.(proto.Message)
	if lat == nil || !isProto {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	h.bucket.earn()
	// The reply's type, read now: once the first attempt runs, it writes into reply.
	replyType := msg.ProtoReflect().Type()
	ctx = withTried(ctx)
	t := ctx.Value(triedKey{}).(*tried)
	firstCtx, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()

	second := &hedge{done: make(chan struct{})}
	hedgeOpts, handOver := attemptOptions(opts)
	timer := time.AfterFunc(lat.delay(), func() {
		second.mu.Lock()
		if second.decided || ctx.Err() != nil || !h.bucket.take() {
			second.mu.Unlock()
			return
		}
		var hctx context.Context
		hctx, second.cancel = context.WithCancel(context.WithValue(ctx, hedgeKey{}, true))
		second.started = true
		second.mu.Unlock()
		if h.hedges != nil {
			h.hedges.Inc()
		}
		second.reply = replyType.New().Interface()
		start := time.Now()
		err := invoker(hctx, method, req, second.reply, cc, hedgeOpts...)
		if err == nil {
			lat.observe(time.Since(start))
		}
		second.mu.Lock()
		second.err = err
		if final(err) && !second.decided {
			second.decided, second.won = true, true
			cancelFirst()
		}
		second.mu.Unlock()
		close(second.done)
	})

	start := time.Now()
	err := invoker(firstCtx, method, req, reply, cc, opts...)
	took := time.Since(start)
	timer.Stop()
	second.mu.Lock()
	if err == nil && !second.won {
		lat.observe(took)
		if sc, s := t.firstAttempt(); s != nil {
			s.answered(sc)
		}
	}
	// The first answer wins; a failure another replica may not give waits for the hedge.
	if !second.started || (final(err) && !second.won) {
		second.decided = true
		if second.cancel != nil {
			second.cancel() // the loser
		}
		second.mu.Unlock()
		return err
	}
	second.mu.Unlock()
	<-second.done
	second.cancel()
	if !second.won {
		return err // neither answered: the first attempt's failure
	}
	if sc, s := t.firstAttempt(); s != nil && !final(err) {
		s.lost(sc) // the hedge answered, the first attempt had not
	}
	handOver()
	if second.err != nil {
		return second.err
	}
	proto.Reset(msg)
	proto.Merge(msg, second.reply)
	return nil
}

// attemptOptions returns opts for a hedge, with the caller's Header, Trailer and Peer options
// replaced by the hedge's own, and handOver, which copies what the hedge received into the
// caller's. A hedge that loses goes on until its cancellation reaches it, after the call has
// returned: it must not write into what the caller reads by then. The first attempt keeps the
// caller's options: the call returns only after it ended.
func attemptOptions(opts []grpc.CallOption) (own []grpc.CallOption, handOver func()) {
	own = make([]grpc.CallOption, 0, len(opts))
	var copies []func()
	for _, o := range opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			md := new(metadata.MD)
			own = append(own, grpc.Header(md))
			copies = append(copies, func() { *o.HeaderAddr = *md })
		case grpc.TrailerCallOption:
			md := new(metadata.MD)
			own = append(own, grpc.Trailer(md))
			copies = append(copies, func() { *o.TrailerAddr = *md })
		case grpc.PeerCallOption:
			p := new(peer.Peer)
			own = append(own, grpc.Peer(p))
			copies = append(copies, func() { *o.PeerAddr = *p })
		default:
			own = append(own, o)
		}
	}
	return own, func() {
		for _, c := range copies {
			c()
		}
	}
}

// final reports whether an attempt's outcome answers the call: a success or a status the server
// chose (NotFound, PermissionDenied...), which another replica would give too; not UNAVAILABLE,
// which another replica may not give, nor the end of the attempt's context.
func final(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded:
		return false
	}
	return true
}

// latencies keeps a method's most recent latencies and the hedging delay they give.
type latencies struct {
	settings HedgeSettings
	current  atomic.Int64 // the delay, in nanoseconds

	mu      sync.Mutex
	samples []time.Duration // a ring of the last len(samples) latencies
	next    int
	seen    int
	sorted  []time.Duration
}

const (
	// latencyWindow is how many recent latencies of a method the delay follows.
	latencyWindow = 512
	// latencyMinSamples is how many latencies a method must have answered before its delay
	// follows them rather than MaxDelay.
	latencyMinSamples = 20
	// latencyRefresh is how often, in calls, the delay is computed again: sorting the window
	// on every call would cost more than the call's other bookkeeping together.
	latencyRefresh = 64
)

func newLatencies(s HedgeSettings) *latencies {
	l := &latencies{settings: s, samples: make([]time.Duration, latencyWindow), sorted: make([]time.Duration, 0, latencyWindow)}
	l.current.Store(int64(s.MaxDelay))
	return l
}

// delay is how long a call waits for an answer before it is hedged.
func (l *latencies) delay() time.Duration { return time.Duration(l.current.Load()) }

// observe records the latency of an answer.
func (l *latencies) observe(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.samples[l.next] = d
	l.next = (l.next + 1) % len(l.samples)
	l.seen++
	if l.seen < latencyMinSamples || (l.seen != latencyMinSamples && l.seen%latencyRefresh != 0) {
		return
	}
	l.sorted = append(l.sorted[:0], l.samples[:min(l.seen, len(l.samples))]...)
	slices.Sort(l.sorted)
	q := l.sorted[min(len(l.sorted)-1, int(l.settings.Quantile*float64(len(l.sorted))))]
	l.current.Store(int64(min(max(q, l.settings.MinDelay), l.settings.MaxDelay)))
}

// tokenBucket caps hedges as gRPC's retry throttling caps retries, but by calls rather than
// failures: every call earns ratio tokens, up to burst, and a hedge spends one. golang.org/x/time/rate
// refills by time, which would let a quiet client hedge every call and a busy one too few.
type tokenBucket struct {
	milli          atomic.Int64 // tokens, in thousandths
	burst, perCall int64
}

func newTokenBucket(burst, ratio float64) *tokenBucket {
	b := &tokenBucket{burst: int64(burst * 1000), perCall: int64(ratio * 1000)}
	b.milli.Store(b.burst)
	return b
}

func (b *tokenBucket) earn() {
	for {
		n := b.milli.Load()
		if n >= b.burst || b.milli.CompareAndSwap(n, min(n+b.perCall, b.burst)) {
			return
		}
	}
}

// take spends a token, if there is one.
func (b *tokenBucket) take() bool {
	for {
		n := b.milli.Load()
		if n < 1000 {
			return false
		}
		if b.milli.CompareAndSwap(n, n-1000) {
			return true
		}
	}
}
