package server

import (
	"strconv"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshmart/meshmart/pkg/auth"
	"github.com/meshmart/meshmart/pkg/interceptors"
)

// LimitDomain is the ErrorInfo domain of the limits the chassis and the services enforce.
const LimitDomain = "meshmart.dev"

// Exhausted returns a ResourceExhausted status naming the limit that was reached: an ErrorInfo
// (reason LIMIT_EXCEEDED, metadata limit and value) and a QuotaFailure whose subject is limit
// and whose description is what. A retry > 0 adds a RetryInfo: when trying again makes sense.
func Exhausted(limit string, value int, what string, retry time.Duration) error {
	st := status.New(codes.ResourceExhausted, what)
	details := []protoadapt.MessageV1{
		&errdetails.ErrorInfo{Reason: "LIMIT_EXCEEDED", Domain: LimitDomain, Metadata: map[string]string{"limit": limit, "value": strconv.Itoa(value)}},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: limit, Description: what}}},
	}
	if retry > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	}
	withDetails, err := st.WithDetails(details...)
	if err != nil {
		return st.Err()
	}
	return withDetails.Err()
}

// streamsPerUser caps the server-streaming calls (WatchPayments, TrackOrders, ExportUsers) one
// user has open at once on this instance at max; the next fails with Exhausted naming
// "streams_per_user". The per-user rate limiter counts a stream once, when it opens, so without
// this cap a user could hold thousands open, each a goroutine and its buffers. Calls a service
// makes (authenticated by its certificate, such as the order service following payment events)
// are not capped: services are trusted peers with a handful of streams each. Client-streaming
// calls (ImportUsers) end when the client finishes sending, and are bounded by their item limit.
//
// It must run after identification (Identify). go-grpc-middleware has a rate limiter but nothing
// that counts concurrent calls per key, hence this small map.
func streamsPerUser(max int) interceptors.Server {
	l := &streamCounter{max: max, open: map[string]int{}}
	return interceptors.Server{
		Stream: func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			id, _ := auth.FromContext(ss.Context())
			if !info.IsServerStream || id.IsService() || !id.IsUser() {
				return handler(srv, ss)
			}
			if !l.acquire(id.Subject) {
				return Exhausted("streams_per_user", max, "too many streams open: at most "+strconv.Itoa(max)+
					" streams per user at once on each instance; close one first", time.Second)
			}
			defer l.release(id.Subject)
			return handler(srv, ss)
		},
	}
}

// streamCounter counts the streams each user has open.
type streamCounter struct {
	max  int
	mu   sync.Mutex
	open map[string]int // only users with a stream open, so it never outgrows the open streams
}

func (l *streamCounter) acquire(user string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[user] >= l.max {
		return false
	}
	l.open[user]++
	return true
}

func (l *streamCounter) release(user string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[user]--; l.open[user] <= 0 {
		delete(l.open, user)
	}
}
