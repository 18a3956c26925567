// Command devsetup makes a platform's development secrets (pkg/devsetup) and sets up the Consul
// ACL that goes with them. It is the compose stack's setup step, built into its own image from
// the same Dockerfile as the services (so it lives in pkg, which the image's build has); `make
// keys` runs it too.
//
// Usage:
//
//	devsetup [-dir data/secrets] [-hosts user=user-1,user-2 ...] [-owner user=65532 ...] [-public DIR] [-postgres HOST:PORT]
//	devsetup acl [-dir data/secrets] -consul consul:8500
//
// The first form writes the secrets, keeping what exists; with -owner it gives each service's
// directory to the uid its container runs as; with -public it copies what a client outside needs
// (the CA bundle, the Consul reader token, the first admin's password) into DIR; with -postgres it
// also writes each service's DSN for a PostgreSQL server at HOST:PORT, the server's superuser
// password and the init.sql that makes a role and a database per service. The second form
// creates the ACL's tokens on the agent, once it answers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshmart/meshmart/pkg/consul"
	"github.com/meshmart/meshmart/pkg/devsetup"
)

// services are the platform's programs that run as themselves: the three services and the REST
// gateway, which calls them over mutual TLS. Each gets an identity, a directory (its container's
// secrets volume) and a Consul token that registers only itself.
var services = []string{"user", "payment", "order", "gateway"}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "devsetup:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "acl" {
		return acl(args[1:])
	}
	fs := flag.NewFlagSet("devsetup", flag.ContinueOnError)
	dir := fs.String("dir", "data/secrets", "directory of the secrets")
	public := fs.String("public", "", "directory to copy the CA bundle, the Consul reader token and the admin password into")
	hosts, owners := pairs{}, pairs{}
	fs.Var(hosts, "hosts", "service=host,host: extra host names of a service's certificate (repeatable)")
	fs.Var(owners, "owner", "service=uid: the uid that owns a service's directory (repeatable)")
	postgres := fs.String("postgres", "", "host:port of a PostgreSQL server: also write each service's DSN and the server's init.sql")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := devsetup.Write(*dir, services, hosts)
	if err != nil {
		return err
	}
	if *postgres != "" {
		if err := devsetup.WritePostgres(*dir, *postgres); err != nil {
			return err
		}
	}
	for svc, uids := range owners {
		uid, err := strconv.Atoi(uids[0])
		if err != nil {
			return fmt.Errorf("-owner %s=%s: %w", svc, uids[0], err)
		}
		if err := chownAll(filepath.Join(*dir, svc), uid); err != nil {
			return err
		}
	}
	if *public != "" {
		for src, name := range map[string]string{s.BundleFile(): "ca.pem", s.ReaderTokenFile(): "consul-reader.token", s.AdminPasswordFile(): "admin-password"} {
			b, err := os.ReadFile(src)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(*public, 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(*public, name), b, 0o600); err != nil {
				return err
			}
		}
	}
	fmt.Printf("development secrets in %s: CA %s, identities of %s; first admin %s\n",
		*dir, s.BundleFile(), strings.Join(services, ", "), devsetup.AdminEmail)
	return nil
}

func acl(args []string) error {
	fs := flag.NewFlagSet("devsetup acl", flag.ContinueOnError)
	dir := fs.String("dir", "data/secrets", "directory of the secrets")
	addr := fs.String("consul", "127.0.0.1:8500", "the Consul agent's HTTP address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	a, err := consul.LoadACL(filepath.Join(*dir, "consul", "acl.json"))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := consul.ApplyWhenReady(ctx, a, *addr, 2*time.Minute); err != nil {
		return err
	}
	fmt.Printf("consul ACL tokens of %s are set on %s\n", strings.Join(services, ", "), *addr)
	return nil
}

func chownAll(dir string, uid int) error {
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	})
}

// pairs is a repeatable name=a,b flag.
type pairs map[string][]string

func (p pairs) String() string { return fmt.Sprint(map[string][]string(p)) }

func (p pairs) Set(v string) error {
	name, list, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return errors.New("want name=value[,value]")
	}
	p[name] = append(p[name], strings.Split(list, ",")...)
	return nil
}
