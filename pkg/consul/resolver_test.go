package consul_test

import (
	"fmt"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/testkit"
)

// recorder is a resolver.ClientConn that keeps what the resolver tells it.
type recorder struct {
	resolver.ClientConn // unused methods panic
	mu                  sync.Mutex
	states              [][]string
	errs                []error
}

func (r *recorder) UpdateState(s resolver.State) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var addrs []string
	for _, e := range s.Endpoints {
		addrs = append(addrs, e.Addresses[0].Addr)
	}
	r.states = append(r.states, addrs)
	return nil
}

func (r *recorder) ReportError(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
}

func (r *recorder) ParseServiceConfig(string) *serviceconfig.ParseResult { return nil }

func (r *recorder) last() ([]string, int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.states) == 0 {
		return nil, 0, len(r.errs)
	}
	return r.states[len(r.states)-1], len(r.states), len(r.errs)
}

func build(t *testing.T, target string) *recorder {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	r, err := consul.NewBuilder(testkit.Logger(t)).Build(resolver.Target{URL: *u}, rec, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return rec
}

func register(t *testing.T, agent *testkit.Consul, id string, port int, tags ...string) {
	t.Helper()
	err := agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "example", Address: "127.0.0.1", Port: port, Tags: tags,
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestResolverFollowsTheCatalog(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	rec := build(t, "consul://"+agent.Addr+"/example?tag=blue")
	want := func(addrs ...string) {
		t.Helper()
		testkit.Eventually(t, 10*time.Second, "resolved addresses", func() (bool, string) {
			got, n, _ := rec.last()
			return n > 0 && slices.Equal(got, addrs), fmt.Sprintf("%v after %d updates", got, n)
		})
	}
	want() // no instance yet: an empty set, pushed
	register(t, agent, "one", 1001, "blue")
	register(t, agent, "two", 1002, "blue")
	register(t, agent, "green", 1003, "green") // filtered out by tag
	want("127.0.0.1:1001", "127.0.0.1:1002")
	if err := agent.Client().Agent().ServiceDeregister("one"); err != nil {
		t.Fatal(err)
	}
	want("127.0.0.1:1002")
	// Removing the last instance is reported too, as an empty set.
	if err := agent.Client().Agent().ServiceDeregister("two"); err != nil {
		t.Fatal(err)
	}
	want()
}

func TestResolverRecoversFromAFailedFirstQuery(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	agent.Stop()
	rec := build(t, "consul://"+agent.Addr+"/example")
	testkit.Eventually(t, 10*time.Second, "an error report", func() (bool, string) {
		_, n, errs := rec.last()
		return errs > 0 && n == 0, fmt.Sprintf("%d updates, %d errors", n, errs)
	})
	agent.Start()
	register(t, agent, "one", 1001)
	testkit.Eventually(t, 20*time.Second, "resolved addresses", func() (bool, string) {
		got, n, _ := rec.last()
		return slices.Equal(got, []string{"127.0.0.1:1001"}), fmt.Sprintf("%v after %d updates", got, n)
	})
}

func TestResolverKeepsAddressesWhileConsulIsDown(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	register(t, agent, "one", 1001)
	rec := build(t, "consul://"+agent.Addr+"/example")
	testkit.Eventually(t, 10*time.Second, "resolved addresses", func() (bool, string) {
		got, _, _ := rec.last()
		return slices.Equal(got, []string{"127.0.0.1:1001"}), fmt.Sprint(got)
	})
	agent.Stop()
	time.Sleep(2 * time.Second)
	got, _, errs := rec.last()
	if !slices.Equal(got, []string{"127.0.0.1:1001"}) || errs != 0 {
		t.Errorf("with consul down: last state %v and %d error reports, want the last addresses and no report", got, errs)
	}
}

// A restarted dev agent knows nothing until the instances register again. The resolver must not
// take that empty answer for "no instance passes", and must not wait out a blocking query on the
// old, higher index before it sees the new registrations.
func TestResolverFollowsARestartedAgent(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	for i := range 20 { // raise the index well above what the restarted agent starts from
		register(t, agent, "one", 1001, fmt.Sprint(i))
	}
	rec := build(t, "consul://"+agent.Addr+"/example")
	testkit.Eventually(t, 10*time.Second, "resolved addresses", func() (bool, string) {
		got, _, _ := rec.last()
		return slices.Equal(got, []string{"127.0.0.1:1001"}), fmt.Sprint(got)
	})
	time.Sleep(time.Second) // the resolver waits in a blocking query
	agent.Stop()
	agent.Start()
	time.Sleep(time.Second)
	if got, _, _ := rec.last(); !slices.Equal(got, []string{"127.0.0.1:1001"}) {
		t.Fatalf("after the agent restarted, before any registration: %v, want the last known addresses", got)
	}
	register(t, agent, "two", 1002)
	testkit.Eventually(t, 5*time.Second, "the registration on the restarted agent", func() (bool, string) {
		got, _, _ := rec.last()
		return slices.Equal(got, []string{"127.0.0.1:1002"}), fmt.Sprint(got)
	})
}

// TestResolverFollowsARestartedAgentWhoseIndexOvertookIt: the restarted agent's index passed the
// resolver's before this service registered again (with ACLs on, creating the tokens and the other
// services' registrations write to it first), so only the agent's new node ID tells the empty
// answer from "no instance passes".
func TestResolverFollowsARestartedAgentWhoseIndexOvertookIt(t *testing.T) {
	t.Parallel()
	agent := testkit.StartConsul(t)
	register(t, agent, "one", 1001)
	rec := build(t, "consul://"+agent.Addr+"/example")
	testkit.Eventually(t, 10*time.Second, "resolved addresses", func() (bool, string) {
		got, _, _ := rec.last()
		return slices.Equal(got, []string{"127.0.0.1:1001"}), fmt.Sprint(got)
	})
	time.Sleep(time.Second) // the resolver waits in a blocking query
	agent.Stop()
	agent.Start()
	client := agent.Client()
	for i := range 40 { // other services' writes raise the new agent's index past the old one's
		if err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: fmt.Sprint("other-", i), Name: "other", Port: 2000 + i}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(2 * time.Second)
	if got, _, _ := rec.last(); !slices.Equal(got, []string{"127.0.0.1:1001"}) {
		t.Fatalf("after the agent restarted, before the service registered again: %v, want the last known addresses", got)
	}
	register(t, agent, "two", 1002)
	testkit.Eventually(t, 5*time.Second, "the registration on the restarted agent", func() (bool, string) {
		got, _, _ := rec.last()
		return slices.Equal(got, []string{"127.0.0.1:1002"}), fmt.Sprint(got)
	})
}
