// Package consul registers chassis servers in Consul and resolves Consul services for gRPC
// clients (the consul:// scheme), and gives the command line of a local dev agent for the test kit
// and the platform launcher.
package consul

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/consul/api"
)

// Registration describes one service instance.
type Registration struct {
	// Name is the Consul service name, e.g. "user".
	Name string
	// Address and Port are where other processes reach the instance.
	Address string
	Port    int
	// Tags and Meta are attached to the instance as given.
	Tags []string
	Meta map[string]string
	// HealthService is the grpc.health.v1 service name Consul's check asks about; "" asks about
	// the server as a whole.
	HealthService string
	// TLS makes the check speak TLS. The check does not verify the server's certificate: it runs
	// from the local agent, which usually holds no copy of the service CA.
	TLS bool
	// CheckInterval and CheckTimeout pace the gRPC health check; DeregisterAfter removes an
	// instance that stayed critical that long.
	CheckInterval, CheckTimeout, DeregisterAfter time.Duration
}

// Registrar keeps one instance registered with the local Consul agent.
type Registrar struct {
	client *api.Client
	reg    Registration
	id     string
	log    *slog.Logger
}

// NewRegistrar returns a Registrar for reg with the agent at addr (host:port or a URL). The
// instance id is the service name plus a random suffix, unique across restarts.
func NewRegistrar(addr string, reg Registration, log *slog.Logger) (*Registrar, error) {
	client, err := newClient(addr)
	if err != nil {
		return nil, err
	}
	return &Registrar{client: client, reg: reg, id: reg.Name + "-" + uuid.NewString()[:8], log: log}, nil
}

func newClient(addr string) (*api.Client, error) {
	return newClientWith(addr, func(*api.Config) {})
}

func newClientWith(addr string, tune func(*api.Config)) (*api.Client, error) {
	cfg := api.DefaultConfig() // honours CONSUL_HTTP_TOKEN and the other standard variables
	if addr != "" {
		cfg.Address = addr
	}
	tune(cfg)
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul client for %s: %w", addr, err)
	}
	return client, nil
}

// ID is the instance's Consul service id.
func (r *Registrar) ID() string { return r.id }

// Register registers the instance with its gRPC health check. The check starts out passing: the
// server registers only once it serves.
func (r *Registrar) Register(ctx context.Context) error {
	target := net.JoinHostPort(r.reg.Address, strconv.Itoa(r.reg.Port))
	if r.reg.HealthService != "" {
		target += "/" + r.reg.HealthService
	}
	reg := &api.AgentServiceRegistration{
		ID:      r.id,
		Name:    r.reg.Name,
		Address: r.reg.Address,
		Port:    r.reg.Port,
		Tags:    r.reg.Tags,
		Meta:    r.reg.Meta,
		Check: &api.AgentServiceCheck{
			CheckID:                        r.id + ":grpc",
			Name:                           "gRPC health of " + r.reg.Name,
			GRPC:                           target,
			GRPCUseTLS:                     r.reg.TLS,
			TLSSkipVerify:                  r.reg.TLS,
			Interval:                       r.reg.CheckInterval.String(),
			Timeout:                        r.reg.CheckTimeout.String(),
			DeregisterCriticalServiceAfter: r.reg.DeregisterAfter.String(),
			Status:                         api.HealthPassing,
		},
	}
	if err := r.client.Agent().ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
		return fmt.Errorf("register %s in consul: %w", r.id, err)
	}
	return nil
}

// Deregister removes the instance from the agent.
func (r *Registrar) Deregister(ctx context.Context) error {
	if err := r.client.Agent().ServiceDeregisterOpts(r.id, (&api.QueryOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("deregister %s from consul: %w", r.id, err)
	}
	r.log.Info("deregistered from consul", "service_id", r.id)
	return nil
}

// Run registers the instance and keeps it registered until ctx ends: it retries with backoff while
// the agent is unreachable, and registers again whenever the agent has forgotten the instance (as
// a restarted dev agent has). It does not deregister; call Deregister for that.
func (r *Registrar) Run(ctx context.Context) {
	registered := false
	bo := backoff{min: 200 * time.Millisecond, max: 10 * time.Second}
	for {
		wait := r.reg.CheckInterval
		switch present, err := r.present(ctx); {
		case ctx.Err() != nil:
			return
		case err != nil:
			r.log.Warn("consul agent unreachable; will retry", "service_id", r.id, "error", err)
			wait = bo.next()
		case !present:
			if err := r.Register(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Warn("consul registration failed; will retry", "service_id", r.id, "error", err)
				wait = bo.next()
				break
			}
			bo.reset()
			if registered {
				r.log.Info("re-registered in consul after the agent forgot the instance", "service_id", r.id)
			} else {
				r.log.Info("registered in consul", "service_id", r.id, "name", r.reg.Name,
					"address", net.JoinHostPort(r.reg.Address, strconv.Itoa(r.reg.Port)))
			}
			registered = true
		default:
			bo.reset()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// present reports whether the agent knows the instance.
func (r *Registrar) present(ctx context.Context) (bool, error) {
	_, _, err := r.client.Agent().Service(r.id, (&api.QueryOptions{}).WithContext(ctx))
	var se api.StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// backoff doubles a delay from min up to max.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else if b.cur *= 2; b.cur > b.max {
		b.cur = b.max
	}
	return b.cur
}

func (b *backoff) reset() { b.cur = 0 }
