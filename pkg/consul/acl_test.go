package consul_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/testkit"
)

func clientWith(t *testing.T, addr, token string) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = addr, token
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func registerAs(c *api.Client, name string) error {
	return c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: name + "-acl-test", Name: name, Address: "127.0.0.1", Port: 1})
}

// TestACLServiceTokensRegisterOnlyTheirOwnService is the attack of registering a fake payment
// instance: with ACLs on, a service's token registers its own service only, a read token
// registers nothing, and no token sees nothing.
func TestACLServiceTokensRegisterOnlyTheirOwnService(t *testing.T) {
	t.Parallel()
	acl := consul.NewACL("user", "payment")
	agent := testkit.StartConsulACL(t, acl)

	payment := clientWith(t, agent.Addr, acl.Services["payment"].SecretID)
	if err := registerAs(payment, "payment"); err != nil {
		t.Fatalf("the payment token cannot register payment: %v", err)
	}
	for name, c := range map[string]*api.Client{
		"the payment token": payment,
		"the reader token":  clientWith(t, agent.Addr, acl.Reader.SecretID),
		"no token":          clientWith(t, agent.Addr, ""),
	} {
		err := registerAs(c, "user")
		var se api.StatusError
		if err == nil || !asStatus(err, &se) || se.Code != http.StatusForbidden {
			t.Errorf("%s registering user: %v, want 403", name, err)
		}
	}
	reader := clientWith(t, agent.Addr, acl.Reader.SecretID)
	if addrs, err := consul.Passing(t.Context(), reader, "payment"); err != nil || len(addrs) != 1 {
		t.Errorf("the reader sees payment as %v, %v; want its one instance", addrs, err)
	}
	if addrs, _ := consul.Passing(t.Context(), clientWith(t, agent.Addr, ""), "payment"); len(addrs) != 0 {
		t.Errorf("an anonymous client sees payment at %v", addrs)
	}

	// Applying again, as after an agent's restart, keeps every token.
	if err := acl.Apply(context.Background(), agent.Addr); err != nil {
		t.Fatalf("Apply again: %v", err)
	}
	agent.Stop()
	agent.Start() // a dev agent forgets its tokens; Start applies the same ones again
	if err := registerAs(payment, "payment"); err != nil {
		t.Fatalf("the payment token after a restart: %v", err)
	}

	path := filepath.Join(t.TempDir(), "acl.json")
	if err := acl.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := consul.LoadACL(path)
	if err != nil || back.Services["payment"] != acl.Services["payment"] || back.Management != acl.Management {
		t.Fatalf("LoadACL = %+v, %v", back, err)
	}
}

func asStatus(err error, se *api.StatusError) bool {
	e, ok := err.(api.StatusError)
	if ok {
		*se = e
	}
	return ok
}
