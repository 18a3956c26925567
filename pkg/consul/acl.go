package consul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/consul/api"
)

// ACL is the access control of a Consul agent that meshmart's own tooling runs (`make run`'s dev
// agent, the compose stack's): ACLs on, deny by default, a management token, one token per
// service that may register only that service, and a read-only token for clients that only
// resolve. A service token is a Consul service identity: write on its own service, read on every
// service and node, which is exactly what the registrar and the consul:// resolver need. So a
// process holding the payment token cannot register a fake user, and one holding none can
// neither register nor read anything.
//
// Every secret is chosen here, up front, and the tokens are created with those secrets (Apply),
// so that a dev agent, which forgets its tokens when it restarts, can be given the same ones
// again and the services' tokens keep working.
type ACL struct {
	// Management is the initial management token: it can do anything. Keep it to operators.
	Management string `json:"management"`
	// Services holds each service's token.
	Services map[string]Token `json:"services"`
	// Reader may read the catalog and nothing else: for Prometheus' discovery, tools and tests.
	Reader Token `json:"reader"`
}

// Token is one ACL token: its public accessor id and its secret.
type Token struct {
	AccessorID string `json:"accessor_id"`
	SecretID   string `json:"secret_id"`
}

func newToken() Token { return Token{AccessorID: uuid.NewString(), SecretID: uuid.NewString()} }

// NewACL chooses fresh tokens for services.
func NewACL(services ...string) ACL {
	a := ACL{Management: uuid.NewString(), Services: map[string]Token{}, Reader: newToken()}
	for _, s := range services {
		a.Services[s] = newToken()
	}
	return a
}

// AgentConfig is the agent configuration (HCL) that turns ACLs on with a's management token, for
// a dev agent's -hcl flag or a configuration file. The agent acts with the management token too.
func (a ACL) AgentConfig() string {
	return fmt.Sprintf(`acl { enabled = true, default_policy = "deny", down_policy = "extend-cache", `+
		`tokens { initial_management = %q, agent = %q } }`, a.Management, a.Management)
}

// readerPolicy is the reader token's policy.
const (
	readerPolicy      = "meshmart-catalog-read"
	readerPolicyRules = `service_prefix "" { policy = "read" }` + "\n" + `node_prefix "" { policy = "read" }`
)

// Apply creates a's tokens on the agent at addr, with the management token. Tokens that exist
// already are kept, so it may run again at any time (after a dev agent restarted, say).
func (a ACL) Apply(ctx context.Context, addr string) error {
	client, err := newClientWith(addr, func(c *api.Config) { c.Token = a.Management })
	if err != nil {
		return err
	}
	acl := client.ACL()
	w := (&api.WriteOptions{}).WithContext(ctx)
	q := (&api.QueryOptions{}).WithContext(ctx)
	create := func(name string, t Token, edit func(*api.ACLToken)) error {
		if _, _, err := acl.TokenRead(t.AccessorID, q); err == nil {
			return nil
		} else if !notFound(err) {
			return fmt.Errorf("consul acl: read the %s token: %w", name, err)
		}
		tok := &api.ACLToken{AccessorID: t.AccessorID, SecretID: t.SecretID, Description: "meshmart " + name}
		edit(tok)
		if _, _, err := acl.TokenCreate(tok, w); err != nil {
			return fmt.Errorf("consul acl: create the %s token: %w", name, err)
		}
		return nil
	}
	names := make([]string, 0, len(a.Services))
	for s := range a.Services {
		names = append(names, s)
	}
	slices.Sort(names)
	for _, s := range names {
		if err := create(s, a.Services[s], func(t *api.ACLToken) {
			t.ServiceIdentities = []*api.ACLServiceIdentity{{ServiceName: s}}
		}); err != nil {
			return err
		}
	}
	policy, _, err := acl.PolicyReadByName(readerPolicy, q)
	if err != nil && !notFound(err) {
		return fmt.Errorf("consul acl: read the reader policy: %w", err)
	}
	if policy == nil {
		policy, _, err = acl.PolicyCreate(&api.ACLPolicy{Name: readerPolicy, Rules: readerPolicyRules,
			Description: "meshmart: read services and nodes"}, w)
		if err != nil {
			return fmt.Errorf("consul acl: create the reader policy: %w", err)
		}
	}
	return create("reader", a.Reader, func(t *api.ACLToken) {
		t.Policies = []*api.ACLTokenPolicyLink{{ID: policy.ID}}
	})
}

func notFound(err error) bool {
	var se api.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusNotFound || se.Code == http.StatusForbidden && strings.Contains(se.Body, "ACL not found")
	}
	return false
}

// Save writes a to path (0600: it holds the management token).
func (a ACL) Save(path string) error {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// LoadACL reads what Save wrote.
func LoadACL(path string) (ACL, error) {
	var a ACL
	b, err := os.ReadFile(path)
	if err != nil {
		return a, err
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, fmt.Errorf("consul acl %s: %w", path, err)
	}
	return a, nil
}

// ApplyWhenReady is Apply, tried again every 200ms for up to within: an agent that has just
// elected itself leader needs a moment before it accepts ACL writes.
func ApplyWhenReady(ctx context.Context, a ACL, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		err := a.Apply(ctx, addr)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
