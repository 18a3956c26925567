package auth

// Option configures an Issuer or a Verifier.
type Option interface{ apply(*options) }

type options struct {
	issuer   string
	audience string
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithIssuer sets the issuer name, the "iss" claim tokens are signed with and must carry; empty
// means DefaultIssuer.
func WithIssuer(name string) Option {
	return optionFunc(func(o *options) {
		if name != "" {
			o.issuer = name
		}
	})
}

// WithAudience sets the audience tokens are issued for and must carry; empty means
// DefaultAudience.
func WithAudience(audience string) Option {
	return optionFunc(func(o *options) {
		if audience != "" {
			o.audience = audience
		}
	})
}

func newOptions(opts []Option) options {
	o := options{issuer: DefaultIssuer, audience: DefaultAudience}
	for _, opt := range opts {
		opt.apply(&o)
	}
	return o
}
