package security

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshmart/meshmart/pkg/testkit"
	orderv1 "github.com/meshmart/meshmart/proto/meshmart/order/v1"
	paymentv1 "github.com/meshmart/meshmart/proto/meshmart/payment/v1"
	userv1 "github.com/meshmart/meshmart/proto/meshmart/user/v1"
	"github.com/meshmart/meshmart/tools/loadkit"
)

// limitNamed returns the limit a ResourceExhausted status names: its ErrorInfo's "limit".
func limitNamed(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetMetadata()["limit"]
		}
	}
	return ""
}

// openOn sums how many calls of method the service's instances hold open, from their metrics.
func openOn(t *testing.T, r *loadkit.Rig, service, method string) float64 {
	t.Helper()
	var total float64
	for _, in := range r.Instances {
		if in.Service != service {
			continue
		}
		n, err := loadkit.Open(in.MetricsAddr, method)
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	return total
}

// cpuOf sums the CPU time the service's instances have used so far.
func cpuOf(t *testing.T, r *loadkit.Rig, service string) time.Duration {
	t.Helper()
	var total time.Duration
	for _, in := range r.Instances {
		if in.Service != service {
			continue
		}
		d, err := testkit.CPUTime(in.Pid())
		if err != nil {
			t.Fatal(err)
		}
		total += d
	}
	return total
}

// cpuOver measures the cores the service's instances use over window.
func cpuOver(t *testing.T, r *loadkit.Rig, service string, window time.Duration) float64 {
	t.Helper()
	before, start := cpuOf(t, r, service), time.Now()
	time.Sleep(window)
	return (cpuOf(t, r, service) - before).Seconds() / time.Since(start).Seconds()
}

// waitOpen waits until the service's instances hold want calls of method open.
func waitOpen(t *testing.T, r *loadkit.Rig, service, method string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		n := openOn(t, r, service, method)
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %v %s calls open, want %v", service, n, method, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Attack: open a thousand WatchPayments streams and leave them idle. Each stream polled the
// database every 200 ms on its own: 452 idle streams from one user cost 0.2 of a core.
//
// Defence: one feed per replica polls the event log and fans it out to every stream, so idle
// streams cost what one does. 1,000 idle streams (15 per user, under the per-user cap) must cost
// the payment service's two replicas less than 5 % of a core above their idle baseline, measured
// server-side from /proc over the same window, and an event still reaches its user's stream.
func TestIdleWatchStreamsCostLittle(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		const streams, perUser = 1000, 15
		sfx := suffix()
		var users []loadkit.Account
		for i := 0; i < (streams+perUser-1)/perUser; i++ {
			users = append(users, r.SignUp(t, fmt.Sprintf("idle%s%d", sfx, i)))
		}
		idle := cpuOver(t, r, "payment", 3*time.Second)
		baseline := openOn(t, r, "payment", "WatchPayments")

		ctx, cancel := context.WithCancel(context.Background())
		defer func() {
			cancel()
			waitOpen(t, r, "payment", "WatchPayments", baseline)
		}()
		var first paymentv1.PaymentService_WatchPaymentsClient
		for i := range streams {
			s, err := r.Payments.WatchPayments(users[i/perUser].In(ctx), &paymentv1.WatchPaymentsRequest{})
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if i == 0 {
				first = s
			}
		}
		waitOpen(t, r, "payment", "WatchPayments", baseline+streams)
		time.Sleep(time.Second) // let the opening settle
		loaded := cpuOver(t, r, "payment", 3*time.Second)
		extra := loaded - idle
		t.Logf("payment service CPU: %.3f cores idle, %.3f cores with %d idle watch streams (+%.3f)", idle, loaded, streams, extra)
		if extra > 0.05 {
			t.Errorf("%d idle watch streams cost %.3f cores above idle, want < 0.05", streams, extra)
		}

		// The feed still delivers: the first user's order is charged, and their stream hears of it.
		if _, err := r.Orders.CreateOrder(users[0].In(callCtx(t)), loadkit.OrderRequest("idle-watch-"+sfx)); err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			resp, err := first.Recv()
			if err == nil && resp.GetEvent().GetPayment().GetUserId() != users[0].ID {
				err = fmt.Errorf("event of user %s on %s's stream", resp.GetEvent().GetPayment().GetUserId(), users[0].ID)
			}
			got <- err
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Errorf("the watch stream: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("no event reached the watch stream within 10 s of the order's payment")
		}
	})
}

// Attack: one user opens streams without end (200 a second): every one a goroutine, its buffers
// and, before the shared feed, its own poll.
//
// Defence: at most 16 server streams per user on each instance (-streams-per-user); the next is
// ResourceExhausted naming "streams_per_user". 40 streams from one user over the two payment
// replicas: at most 32 stay open, the rest are refused so.
func TestWatchStreamsPerUserAreCapped(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		const tries, perInstance, instances = 40, 16, 2
		u := r.SignUp(t, "greedy"+suffix())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errs := make(chan error, tries)
		for range tries {
			s, err := r.Payments.WatchPayments(u.In(ctx), &paymentv1.WatchPaymentsRequest{})
			if err != nil {
				t.Fatal(err)
			}
			go func() { _, err := s.Recv(); errs <- err }()
		}
		refused := 0
		timeout := time.After(5 * time.Second)
	collect:
		for refused < tries {
			select {
			case err := <-errs:
				if status.Code(err) != codes.ResourceExhausted || limitNamed(err) != "streams_per_user" {
					t.Fatalf("a watch stream ended with %v, want ResourceExhausted naming streams_per_user", err)
				}
				refused++
			case <-timeout:
				break collect
			}
		}
		t.Logf("%d of %d streams from one user refused", refused, tries)
		if open := tries - refused; open > perInstance*instances || refused == 0 {
			t.Errorf("%d streams of one user stay open, want at most %d (%d per instance), the rest refused", open, perInstance*instances, perInstance)
		}
	})
}

// Attack: subscribe one TrackOrders stream to ever more orders, as fast as the connection
// carries: nothing limited either.
//
// Defence: a stream tracks at most 100 orders and changes its subscriptions at most 10 times a
// second (bursts of 20); past either it ends with ResourceExhausted naming the limit
// (track_orders_per_stream, track_messages_per_second with a retry delay).
func TestTrackOrdersSubscriptionsAreCapped(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		const maxOrders = 100
		u := r.SignUp(t, "tracker"+suffix())
		sfx := suffix()
		var ids []string
		for i := range maxOrders + 1 {
			o, err := r.Orders.CreateOrder(u.In(callCtx(t)), loadkit.OrderRequest(fmt.Sprintf("track-%s-%d", sfx, i)))
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, o.GetOrder().GetId())
		}
		subscribe := func(s orderv1.OrderService_TrackOrdersClient, id string) error {
			if err := s.Send(&orderv1.TrackOrdersRequest{Action: &orderv1.TrackOrdersRequest_SubscribeOrderId{SubscribeOrderId: id}}); err != nil {
				return err
			}
			for {
				resp, err := s.Recv()
				if err != nil || resp.GetUpdate().GetType() == orderv1.OrderUpdateType_ORDER_UPDATE_TYPE_SUBSCRIBED {
					return err
				}
			}
		}
		ctx, cancel := context.WithTimeout(u.In(context.Background()), time.Minute)
		defer cancel()

		// The rate: subscription changes as fast as they go end the stream within the burst.
		flood, err := r.Orders.TrackOrders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		sent := 0
		for ; sent < 100; sent++ {
			if err = subscribe(flood, ids[0]); err != nil {
				break
			}
		}
		t.Logf("a flood of subscriptions ended after %d: %v", sent, err)
		if status.Code(err) != codes.ResourceExhausted || limitNamed(err) != "track_messages_per_second" {
			t.Errorf("flood of subscriptions ended with %v, want ResourceExhausted naming track_messages_per_second", err)
		}
		if sent > 40 {
			t.Errorf("%d subscription changes went through before the limit, want about the burst of 20", sent)
		}

		// The number: at the allowed pace, the 101st order is refused.
		paced, err := r.Orders.TrackOrders(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tick := time.NewTicker(110 * time.Millisecond)
		defer tick.Stop()
		for i, id := range ids {
			if i >= 15 { // the first ones ride the burst
				<-tick.C
			}
			err = subscribe(paced, id)
			if i < maxOrders && err != nil {
				t.Fatalf("subscription %d: %v", i+1, err)
			}
		}
		if status.Code(err) != codes.ResourceExhausted || limitNamed(err) != "track_orders_per_stream" {
			t.Errorf("subscription %d ended with %v, want ResourceExhausted naming track_orders_per_stream", maxOrders+1, err)
		}
	})
}

// Attack: import 1 valid account and 40,000 invalid ones. The answer held one result per item,
// outgrew the 4 MiB message limit, and the caller got an error, yet the valid account was created.
//
// Defence: the answer holds counts and the first 100 failures; nothing is written before the
// stream ends, a stream over -import-max-items (50,000) fails with ResourceExhausted naming
// import_items_per_stream and creates nothing, and once an account is written the call answers OK.
func TestImportAnswerStaysSmall(t *testing.T) {
	eachDatabase(t, func(t *testing.T, r *loadkit.Rig) {
		admin := r.LogInAdmin(t)
		for _, tt := range []struct {
			name    string
			invalid int
			want    codes.Code
		}{
			{"1 valid, 40,000 invalid", 40000, codes.OK},
			{"over the item limit", 50000, codes.ResourceExhausted},
		} {
			t.Run(tt.name, func(t *testing.T) {
				name := "imported" + suffix()
				ctx, cancel := context.WithTimeout(admin.In(context.Background()), time.Minute)
				defer cancel()
				start := time.Now()
				stream, err := r.Users.ImportUsers(ctx)
				if err != nil {
					t.Fatal(err)
				}
				valid := &userv1.ImportUsersRequest{User: &userv1.CreateUserRequest{Email: name + "@example.com", Username: name, Password: loadkit.Password, GivenName: "I"}}
				bad := &userv1.ImportUsersRequest{User: &userv1.CreateUserRequest{Email: "not an email", Username: "x", Password: loadkit.Password, GivenName: "X"}}
				if err := stream.Send(valid); err != nil {
					t.Fatal(err)
				}
				for range tt.invalid {
					if err := stream.Send(bad); err != nil {
						break // answered early: CloseAndRecv has the status
					}
				}
				summary, err := stream.CloseAndRecv()
				t.Logf("%s: %v, %d bytes, in %v", tt.name, status.Code(err), proto.Size(summary), time.Since(start).Round(time.Millisecond))
				_, getErr := r.Users.GetUser(admin.In(callCtx(t)), &userv1.GetUserRequest{Lookup: &userv1.GetUserRequest_Username{Username: name}})
				if tt.want != codes.OK {
					if status.Code(err) != tt.want || limitNamed(err) != "import_items_per_stream" {
						t.Errorf("import over the limit = %v, want ResourceExhausted naming import_items_per_stream", err)
					}
					wantCode(t, "the valid account of a refused import", getErr, codes.NotFound)
					return
				}
				if err != nil {
					t.Fatalf("import = %v, want OK", err)
				}
				if getErr != nil {
					t.Errorf("the valid account: %v", getErr)
				}
				if summary.GetCreatedCount() != 1 || summary.GetFailedCount() != int64(tt.invalid) || len(summary.GetErrors()) != 100 {
					t.Errorf("summary: %d created, %d failed, %d errors listed; want 1, %d, 100",
						summary.GetCreatedCount(), summary.GetFailedCount(), len(summary.GetErrors()), tt.invalid)
				}
				if size := proto.Size(summary); size > 64<<10 {
					t.Errorf("the answer is %d bytes, want < 64 KiB whatever the stream held", size)
				}
			})
		}
	})
}
