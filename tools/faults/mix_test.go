package faults

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/sqldb"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// mix is the load every fault test runs: each worker, as an account of its own, reads its account
// (GetUser, idempotent), places an order under a fresh idempotency key (CreateOrder, idempotent by
// its key), lists its payments (ListPayments, idempotent) and signs a new user up (CreateUser, not
// idempotent). It remembers every order key it tried, to check afterwards that no order was lost
// or doubled.
type mix struct {
	rig  *loadkit.Rig
	name string

	tokens   sync.RWMutex // guards accounts' tokens, which the login op replaces
	accounts []loadkit.Account
	logins   map[string]int // fresh tokens the login op got, by key id

	mu     sync.Mutex
	orders map[orderKey]string // the order's id; "" while no call under the key succeeded
}

type orderKey struct{ worker, n int }

func (k orderKey) String() string { return fmt.Sprintf("w%d-n%d", k.worker, k.n) }

// newMix signs up accounts accounts; worker w acts as account w modulo accounts.
func newMix(t *testing.T, r *loadkit.Rig, name string, accounts int) *mix {
	m := &mix{rig: r, name: name, orders: map[orderKey]string{}, logins: map[string]int{}}
	for w := range accounts {
		m.accounts = append(m.accounts, r.SignUp(t, fmt.Sprintf("%s-%d", name, w)))
	}
	return m
}

func (m *mix) account(worker int) loadkit.Account {
	m.tokens.RLock()
	defer m.tokens.RUnlock()
	return m.accounts[worker%len(m.accounts)]
}

// login is an op the mix leaves out by default: it logs the worker's account in again (Login,
// idempotent) and gives the account's next calls the fresh token, so that the load's tokens
// follow the signing key, as real clients' do when they sign in again.
func (m *mix) login() loadkit.Op {
	return loadkit.Op{Name: "Login", Call: func(ctx context.Context, w, _ int) error {
		i := w % len(m.accounts)
		var resp *userv1.LoginResponse
		err := loadkit.WhenRefused(ctx, func() (err error) {
			resp, err = m.rig.Users.Login(ctx, &userv1.LoginRequest{
				Identifier: &userv1.LoginRequest_Username{Username: fmt.Sprintf("%s-%d", m.name, i)}, Password: loadkit.Password})
			return err
		})
		if err != nil {
			return err
		}
		m.tokens.Lock()
		defer m.tokens.Unlock()
		m.accounts[i] = m.rig.LoggedIn(resp)
		m.logins[kidOf(resp.GetAccessToken())]++
		return nil
	}}
}

// ops are the mix's calls; without are the names of ops to leave out.
func (m *mix) ops(without ...string) []loadkit.Op {
	all := []loadkit.Op{
		{Name: "GetUser", Call: func(ctx context.Context, w, _ int) error {
			a := m.account(w)
			_, err := m.rig.Users.GetUser(a.In(ctx), &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Id{Id: a.ID}})
			return err
		}},
		{Name: "CreateOrder", Call: func(ctx context.Context, w, n int) error {
			key := orderKey{w, n}
			m.mu.Lock()
			m.orders[key] = ""
			m.mu.Unlock()
			resp, err := m.rig.Orders.CreateOrder(m.account(w).In(ctx), loadkit.OrderRequest(key.String()))
			if err == nil {
				m.mu.Lock()
				m.orders[key] = resp.GetOrder().GetId()
				m.mu.Unlock()
			}
			return err
		}},
		{Name: "ListPayments", Call: func(ctx context.Context, w, _ int) error {
			_, err := m.rig.Payments.ListPayments(m.account(w).In(ctx), &paymentv1.ListPaymentsRequest{PageSize: 5})
			return err
		}},
		{Name: "CreateUser", Call: func(ctx context.Context, w, n int) error {
			name := fmt.Sprintf("%s-new-%d-%d", m.name, w, n)
			return loadkit.WhenRefused(ctx, func() error {
				_, err := m.rig.Users.CreateUser(ctx, &userv1.CreateUserRequest{
					Email: name + "@example.com", Username: name, Password: loadkit.Password, GivenName: "New"})
				return err
			})
		}},
	}
	return slices.DeleteFunc(all, func(op loadkit.Op) bool { return slices.Contains(without, op.Name) })
}

// checkOrders proves that no order was lost or doubled. Every key whose call failed is tried
// again, as a client would; then each key must name exactly one PAID order, in the API and in the
// order service's database, and each order exactly one payment of its total in the payment
// service's.
func (m *mix) checkOrders(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m.mu.Lock()
	defer m.mu.Unlock()
	retried := 0
	for key, id := range m.orders {
		if id != "" {
			continue
		}
		retried++
		for {
			resp, err := m.rig.Orders.CreateOrder(m.account(key.worker).In(ctx), loadkit.OrderRequest(key.String()))
			if err == nil {
				m.orders[key] = resp.GetOrder().GetId()
				break
			}
			if ctx.Err() != nil || status.Code(err) != codes.Unavailable {
				t.Fatalf("order %s tried again: %v", key, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Every order is PAID (one whose payment was cut off settles in the background).
	for key, id := range m.orders {
		for {
			resp, err := m.rig.Orders.GetOrder(m.account(key.worker).In(ctx), &orderv1.GetOrderRequest{Id: id})
			if err != nil {
				t.Fatalf("GetOrder %s (key %s): %v", id, key, err)
			}
			if s := resp.GetOrder().GetStatus(); s == orderv1.OrderStatus_ORDER_STATUS_PAID {
				break
			} else if s != orderv1.OrderStatus_ORDER_STATUS_PENDING || ctx.Err() != nil {
				t.Fatalf("order %s (key %s) is %v, want PAID", id, key, s)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	users := make([]any, len(m.accounts))
	for i := range users {
		users[i] = m.account(i).ID
	}
	in := "(" + strings.TrimSuffix(strings.Repeat("?,", len(users)), ",") + ")"
	orders := map[string]int{}     // order id -> rows
	byKey := map[string][]string{} // user/key -> order ids
	query(t, m.rig.DSN("order"), "SELECT id, user_id, idempotency_key FROM orders WHERE user_id IN "+in, users, func(s scanner) error {
		var id, user, key string
		if err := s.Scan(&id, &user, &key); err != nil {
			return err
		}
		orders[id]++
		byKey[user+"/"+key] = append(byKey[user+"/"+key], id)
		return nil
	})
	payments := map[string][]int64{} // order id -> amounts
	query(t, m.rig.DSN("payment"), "SELECT order_id, amount FROM payments WHERE user_id IN "+in, users, func(s scanner) error {
		var order string
		var amount int64
		if err := s.Scan(&order, &amount); err != nil {
			return err
		}
		payments[order] = append(payments[order], amount)
		return nil
	})
	if len(orders) != len(m.orders) {
		t.Errorf("the order database holds %d orders of the load's accounts; the load placed %d", len(orders), len(m.orders))
	}
	for key, id := range m.orders {
		k := m.account(key.worker).ID + "/" + key.String()
		if ids := byKey[k]; len(ids) != 1 || ids[0] != id {
			t.Errorf("key %s: orders %v in the database, want exactly [%s]", key, ids, id)
		}
		if p := payments[id]; len(p) != 1 || p[0] != loadkit.OrderTotal {
			t.Errorf("order %s (key %s): payments of %v in the database, want exactly one of %d", id, key, p, loadkit.OrderTotal)
		}
	}
	if len(payments) != len(m.orders) {
		t.Errorf("the payment database holds payments for %d orders; the load placed %d", len(payments), len(m.orders))
	}
	t.Logf("orders: %d placed, %d of them tried again after a failed call; each is in the database once, PAID, with one payment", len(m.orders), retried)
}

type scanner interface{ Scan(...any) error }

func query(t *testing.T, dsn, q string, args []any, row func(scanner) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db, err := sqldb.Open(ctx, dsn)
	if err != nil {
		t.Fatalf("open %s: %v", sqldb.Describe(dsn), err)
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, db.Rebind(q), args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows); err != nil {
			t.Fatal(err)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
}

// consulWatch records, from start, when each of its addresses stopped being listed as passing in
// Consul. It polls every 50 ms until ctx ends.
type consulWatch struct {
	mu   sync.Mutex
	gone map[string]time.Duration
}

func watchConsul(ctx context.Context, r *loadkit.Rig, start time.Time, services []string, addrs ...string) *consulWatch {
	cw := &consulWatch{gone: map[string]time.Duration{}}
	cfg := api.DefaultConfig()
	cfg.Address = r.ConsulAddr
	cfg.Token = r.ACL.Reader.SecretID // ACLs deny by default: without a token nothing is listed
	client, _ := api.NewClient(cfg)
	go func() {
		for ctx.Err() == nil {
			var passing []string
			var err error
			for _, svc := range services {
				var some []string
				if some, err = consul.Passing(ctx, client, svc); err != nil {
					break
				}
				passing = append(passing, some...)
			}
			if err == nil {
				now := time.Since(start)
				cw.mu.Lock()
				for _, a := range addrs {
					if _, gone := cw.gone[a]; !gone && !slices.Contains(passing, a) {
						cw.gone[a] = now
					}
				}
				cw.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return cw
}

// Gone returns when addr stopped being listed, and whether it did.
func (cw *consulWatch) Gone(addr string) (time.Duration, bool) {
	cw.mu.Lock()
	defer cw.mu.Unlock()
	d, ok := cw.gone[addr]
	return d, ok
}
