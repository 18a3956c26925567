// Command attacker floods the user service with Login calls for unknown accounts from one source
// address, as TestLoginFloodFromOneAddress's attacker: a process of its own, built without the
// race detector, so that the victim's latency measured by the test is the server's, not the
// test process' scheduling. It prints the answers it got by code, as JSON, on stdout.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/meshmart/meshmart/pkg/client"
	"github.com/meshmart/meshmart/pkg/identity"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
)

func main() {
	targets := flag.String("targets", "", "comma-separated host:port of the user service's instances")
	from := flag.String("from", "127.0.0.77", "source IP address of every connection")
	ca := flag.String("ca", "", "the trust domain's CA bundle file")
	td := flag.String("trust-domain", "", "the trust domain")
	workers := flag.Int("workers", 300, "concurrent calls")
	rps := flag.Float64("rate", 1000, "calls per second at most, all workers together")
	duration := flag.Duration("duration", 5*time.Second, "how long to attack")
	flag.Parse()
	if err := run(strings.Split(*targets, ","), *from, *ca, *td, *workers, *rps, *duration); err != nil {
		log.Fatal(err)
	}
}

func run(targets []string, from, ca, tdName string, workers int, rps float64, d time.Duration) error {
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return err
	}
	bundle, err := identity.LoadBundle(td, ca, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	var users []userv1.UserServiceClient
	for _, target := range targets {
		cc, err := client.Dial(target, slog.New(slog.DiscardHandler), client.WithTrustBundle(bundle, td), client.WithServer("user"),
			client.WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				return dialer.DialContext(ctx, "tcp", addr)
			})))
		if err != nil {
			return err
		}
		defer cc.Close()
		users = append(users, userv1.NewUserServiceClient(cc))
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	limit := rate.NewLimiter(rate.Limit(rps), workers)
	var (
		mu     sync.Mutex
		byCode = map[string]int{}
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				if limit.Wait(ctx) != nil {
					return
				}
				callCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := users[(w+i)%len(users)].Login(callCtx, &userv1.LoginRequest{
					Identifier: &userv1.LoginRequest_Email{Email: fmt.Sprintf("nobody-%d-%d@example.com", w, i)},
					Password:   "not the password"})
				cancel()
				mu.Lock()
				byCode[status.Code(err).String()]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return json.NewEncoder(os.Stdout).Encode(byCode)
}
