package webrpc

import "time"

// Option configures New.
type Option interface {
	apply(*config)
}

type config struct {
	unaryTimeout time.Duration
	readMaxBytes int
}

func defaultConfig() config {
	return config{unaryTimeout: 30 * time.Second, readMaxBytes: 4 << 20}
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithUnaryTimeout bounds a unary call whose caller set no deadline of its own. The default is 30
// seconds; zero or less leaves such calls unbounded, which only tests should want. Server streams
// are never bounded: they end when the caller or the service ends them.
func WithUnaryTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.unaryTimeout = d })
}

// WithReadMaxBytes caps the size of a request message, so a caller cannot make the gateway buffer
// an unbounded body. The default is 4 MiB, the services' own gRPC limit; zero or less means no
// limit.
func WithReadMaxBytes(n int) Option {
	return optionFunc(func(c *config) { c.readMaxBytes = n })
}
