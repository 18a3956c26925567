package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/resolver"
)

// Scheme is the target scheme the resolver handles:
//
//	consul://127.0.0.1:8500/user?tag=blue&dc=dc1
//
// names the passing instances of service "user" carrying tag "blue" in datacenter "dc1", as known
// to the agent at 127.0.0.1:8500 (the default when the host is empty). tag and dc are optional.
const Scheme = "consul"

// waitTime bounds one blocking query; Consul answers sooner when the service changes.
const waitTime = 5 * time.Minute

// restartGrace is how long an empty answer from an agent that has lost its state (its index went
// backwards: a restarted dev agent, or servers restored from nothing) is taken as "not registered
// again yet" rather than "no instance passes": the last known addresses are kept meanwhile.
const restartGrace = 30 * time.Second

// minRequery spaces out the immediate re-queries that ResolveNow asks for, so a flapping
// connection cannot turn into a query storm.
const minRequery = 250 * time.Millisecond

// NewBuilder returns a gRPC resolver builder for consul:// targets, to pass to
// grpc.WithResolvers. Registering it globally is left to the caller.
//
// No well-kept library does this: the known consul resolvers miss the removal of the last
// instance, freeze after a failed first query, or share one wait index across datacenters. This
// one watches with blocking queries, one wait index per target; re-queries at once on
// ResolveNow; backs off on errors while keeping the last known addresses; and reports an empty
// set only when Consul says no instance passes, not while a restarted agent has yet to hear from
// any (see restartGrace).
//
// The resolver reads the catalog with the ACL token token, when given, else with the one the
// environment names (CONSUL_HTTP_TOKEN, CONSUL_HTTP_TOKEN_FILE).
func NewBuilder(log *slog.Logger, token ...string) resolver.Builder {
	b := &builder{log: log}
	if len(token) > 0 {
		b.token = token[0]
	}
	return b
}

// ServiceOf returns the service a consul:// target names ("consul://127.0.0.1:8500/payment" is
// "payment"), or "" for any other target.
func ServiceOf(target string) string {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != Scheme {
		return ""
	}
	return strings.Trim(u.Path, "/")
}

type builder struct {
	log   *slog.Logger
	token string
}

func (b *builder) Scheme() string { return Scheme }

func (b *builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := strings.Trim(target.URL.Path, "/")
	if service == "" {
		return nil, fmt.Errorf("consul target %q names no service", target.URL.String())
	}
	// A fresh connection per query: on a reused one, Go's HTTP client silently sends a GET again
	// when the connection breaks, so a blocking query cut off by an agent's restart would be
	// re-sent to the restarted agent with the old, higher index and wait its full time there.
	client, err := newClientWith(target.URL.Host, func(c *api.Config) {
		c.Transport.DisableKeepAlives = true
		if b.token != "" {
			c.Token = b.token
		}
	})
	if err != nil {
		return nil, err
	}
	q := target.URL.Query()
	ctx, cancel := context.WithCancel(context.Background())
	r := &consulResolver{
		client:  client,
		service: service,
		tag:     q.Get("tag"),
		dc:      q.Get("dc"),
		cc:      cc,
		log:     b.log.With("target", target.URL.String()),
		ctx:     ctx,
		cancel:  cancel,
		wake:    make(chan struct{}, 1),
	}
	r.wg.Add(1)
	go r.watch()
	return r, nil
}

type consulResolver struct {
	client           *api.Client
	service, tag, dc string
	cc               resolver.ClientConn
	log              *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu          sync.Mutex
	cancelQuery context.CancelFunc // ends the blocking query in flight, for ResolveNow
	wake        chan struct{}      // a pending ResolveNow
}

// ResolveNow asks for an immediate re-query.
func (r *consulResolver) ResolveNow(resolver.ResolveNowOptions) {
	r.mu.Lock()
	if r.cancelQuery != nil {
		r.cancelQuery()
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Close stops the watch.
func (r *consulResolver) Close() {
	r.cancel()
	r.wg.Wait()
}

func (r *consulResolver) watch() {
	defer r.wg.Done()
	var (
		index     uint64
		seen      uint64 // the highest index Consul has reported
		forgot    time.Time
		last      []string
		lastNodes map[string]string // node name -> node ID, of the last non-empty answer
		haveState bool
		lastQuery time.Time
		bo        = backoff{min: 100 * time.Millisecond, max: 10 * time.Second}
	)
	for r.ctx.Err() == nil {
		if wait := minRequery - time.Since(lastQuery); wait > 0 {
			if !r.sleep(wait, false) {
				return
			}
		}
		if r.requeried() {
			index = 0 // ResolveNow: ask without waiting for a change
		}
		lastQuery = time.Now()
		addrs, nodes, meta, err := r.query(index)
		switch {
		case r.ctx.Err() != nil:
			return
		case errors.Is(err, context.Canceled):
			continue // ResolveNow cut the query short; its wake-up is pending
		case err != nil:
			// Keep serving the last known addresses; only a client that never had any learns of
			// the error, so its calls fail fast instead of waiting.
			if !haveState {
				r.cc.ReportError(fmt.Errorf("consul: resolve %s: %w", r.service, err))
			}
			r.log.Warn("consul query failed; keeping the last known addresses", "error", err, "addresses", len(last))
			// The agent may come back restarted, with a lower index than ours: a blocking query
			// would then wait its full time before answering. Ask afresh.
			index = 0
			if !r.sleep(bo.next(), true) {
				return
			}
			continue
		}
		bo.reset()
		// Consul's index only grows, except across a restart that lost its state; start over then.
		// The index alone misses a restart after which other writes (ACL tokens, other services'
		// registrations) raised it past ours before this service registered again: an empty answer
		// is also a lost state when a node that held the last known instances is gone or has
		// another node ID (a dev agent comes back as a new node).
		if meta.LastIndex < seen || len(addrs) == 0 && len(last) > 0 && time.Since(forgot) >= restartGrace && r.nodesReplaced(lastNodes) {
			r.log.Info("consul lost its state (restarted?); keeping the last known addresses until instances register again", "addresses", len(last))
			forgot, lastNodes = time.Now(), nil // once per restart: an answer still empty after the grace is believed
		}
		if len(addrs) > 0 {
			lastNodes = nodes
		}
		seen = meta.LastIndex
		switch {
		case index != 0 && meta.LastIndex == index:
			// An answer without progress: the wait ran out, or the agent is shutting down (it
			// answers blocking queries at once then, and may come back with a lower index that
			// a blocking query would wait out). Ask afresh, once.
			index = 0
		case meta.LastIndex < index:
			index = 0
		default:
			index = meta.LastIndex
		}
		if len(addrs) == 0 && len(last) > 0 && time.Since(forgot) < restartGrace {
			// Not "no instance passes" but "none has registered again yet": poll until one has.
			index = 0
			continue
		}
		if haveState && slices.Equal(addrs, last) {
			continue
		}
		endpoints := make([]resolver.Endpoint, len(addrs))
		for i, a := range addrs {
			endpoints[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: a}}}
		}
		// An empty set is pushed too: Consul said no instance passes.
		if err := r.cc.UpdateState(resolver.State{Endpoints: endpoints}); err != nil && len(addrs) > 0 {
			r.log.Warn("grpc rejected the resolved addresses", "error", err)
		}
		r.log.Debug("resolved", "addresses", addrs)
		last, haveState = addrs, true
	}
}

// nodesReplaced reports whether any of nodes (name -> ID) is no longer in the catalog under that
// ID, as after an agent restarted without its state.
func (r *consulResolver) nodesReplaced(nodes map[string]string) bool {
	ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
	defer cancel()
	for name, id := range nodes {
		n, _, err := r.client.Catalog().Node(name, (&api.QueryOptions{Datacenter: r.dc}).WithContext(ctx))
		if err != nil {
			continue // cannot tell: take Consul's answer as it is
		}
		if n == nil || n.Node == nil || n.Node.ID != id {
			return true
		}
	}
	return false
}

// query runs one blocking query for the passing instances, returning their sorted addresses and
// the nodes they are on (name -> node ID).
func (r *consulResolver) query(index uint64) ([]string, map[string]string, *api.QueryMeta, error) {
	ctx, cancel := context.WithCancel(r.ctx)
	r.mu.Lock()
	r.cancelQuery = cancel
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.cancelQuery = nil
		r.mu.Unlock()
		cancel()
	}()
	opts := (&api.QueryOptions{WaitIndex: index, WaitTime: waitTime, Datacenter: r.dc}).WithContext(ctx)
	entries, meta, err := r.client.Health().Service(r.service, r.tag, true, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	nodes := map[string]string{}
	for _, e := range entries {
		if e.Node != nil {
			nodes[e.Node.Node] = e.Node.ID
		}
	}
	return addresses(entries), nodes, meta, nil
}

// Passing returns the sorted host:port addresses of the instances of service that pass their
// health checks, as the agent behind client knows them.
func Passing(ctx context.Context, client *api.Client, service string) ([]string, error) {
	addrs, _, err := passing(client, service, "", (&api.QueryOptions{}).WithContext(ctx))
	return addrs, err
}

func passing(client *api.Client, service, tag string, opts *api.QueryOptions) ([]string, *api.QueryMeta, error) {
	entries, meta, err := client.Health().Service(service, tag, true, opts)
	if err != nil {
		return nil, nil, err
	}
	return addresses(entries), meta, nil
}

// addresses returns the sorted host:port addresses of entries.
func addresses(entries []*api.ServiceEntry) []string {
	addrs := make([]string, 0, len(entries))
	for _, e := range entries {
		host := e.Service.Address
		if host == "" {
			host = e.Node.Address
		}
		addrs = append(addrs, net.JoinHostPort(host, strconv.Itoa(e.Service.Port)))
	}
	slices.Sort(addrs)
	return addrs
}

// requeried reports, and clears, a pending ResolveNow.
func (r *consulResolver) requeried() bool {
	select {
	case <-r.wake:
		return true
	default:
		return false
	}
}

// sleep waits for d, or until the resolver closes (false); when wakeable, ResolveNow ends it early.
func (r *consulResolver) sleep(d time.Duration, wakeable bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	wake := r.wake
	if !wakeable {
		wake = nil
	}
	select {
	case <-r.ctx.Done():
		return false
	case <-t.C:
		return true
	case <-wake:
		return true
	}
}
