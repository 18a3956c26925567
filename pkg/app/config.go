package app

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// The binder is written over the standard flag package rather than taken from ardanlabs/conf,
// which the issue points at: conf would rename every flag to --double-dash and put every
// environment variable under a namespace prefix, and tests, tools/platform, docker-compose.yml and
// the docs rely on today's names (-grpc-addr, DATABASE_URL, CONSUL_HTTP_ADDR...). What conf gives
// beyond that, struct tags and a masked dump, fits in this file.

// A setting is one tagged struct field. The tags are:
//
//	flag:"grpc-addr"              the flag name (a field without it is no setting)
//	env:"MESHMART_GRPC_ADDR"      the environment variable
//	usage:"gRPC listen address"   the help text
//	secret:"true"                 masked wherever settings are logged, and also read from the file
//	                              that <env>_FILE names (DATABASE_URL_FILE=/run/secrets/dsn), as
//	                              Docker secrets and Kubernetes Secrets mount them
//	required:"why it is needed"   the setting must not be empty or zero
//
// The field's value when it is bound is its default. Supported types are string, bool, int,
// float64, time.Duration and []string (comma-separated).
type setting struct {
	flag, env, usage, required string
	secret                     bool
	value                      flag.Value
	def                        string // the default, as flag prints it
}

// Settings are the settings bound from one or more structs; see Bind.
type Settings struct {
	list []setting
}

// Bind defines a flag on fs for every tagged field of each cfg (pointers to structs), in the
// order of the fields, and sets each field from its environment variable as getenv reports it
// (os.Getenv when nil) unless that is empty. Parsing fs afterwards lets flags override the
// environment, so the precedence is default < environment < flag. It returns an error naming
// every environment variable that does not parse.
func Bind(fs *flag.FlagSet, getenv func(string) string, cfgs ...any) (*Settings, error) {
	if getenv == nil {
		getenv = os.Getenv
	}
	s := &Settings{}
	var errs []error
	for _, cfg := range cfgs {
		list, err := settingsOf(cfg)
		if err != nil {
			return nil, err
		}
		for _, st := range list {
			// The flag is defined before the environment is read, so that -h prints the built-in
			// default and never a secret taken from the environment.
			fs.Var(st.value, st.flag, fmt.Sprintf("%s (env %s)", st.usage, st.env))
			v := getenv(st.env)
			if path := getenv(st.env + FileSuffix); st.secret && v == "" && path != "" {
				b, err := os.ReadFile(path)
				v = strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
				switch {
				case err != nil:
					errs = append(errs, fmt.Errorf("%s%s: %w", st.env, FileSuffix, err))
				case v == "":
					errs = append(errs, fmt.Errorf("%s%s=%q: the file is empty", st.env, FileSuffix, path))
				}
			}
			if v != "" {
				if err := st.value.Set(v); err != nil {
					if st.secret {
						v = Masked
					}
					errs = append(errs, fmt.Errorf("%s=%q: %w", st.env, v, err))
				}
			}
			s.list = append(s.list, st)
		}
	}
	return s, errors.Join(errs...)
}

// FileSuffix names the variable that holds a secret setting's file: DATABASE_URL_FILE for
// DATABASE_URL. The variable itself wins when both are set; a file that cannot be read, or is
// empty, is an error naming the variable. One trailing newline is dropped.
const FileSuffix = "_FILE"

// Check reports, in one error, every required setting that is still empty, naming its flag and
// environment variable and why it is needed.
func (s *Settings) Check() error {
	var errs []error
	for _, st := range s.list {
		if st.required != "" && isZero(st.value) {
			errs = append(errs, fmt.Errorf("-%s (%s) is required: %s", st.flag, st.env, st.required))
		}
	}
	return errors.Join(errs...)
}

// LogValue lists every setting under its flag name in lower_snake_case, secrets masked, so that a
// whole configuration is one log line.
func (s *Settings) LogValue() slog.Value {
	attrs := make([]slog.Attr, 0, len(s.list))
	for _, st := range s.list {
		attrs = append(attrs, slog.String(strings.ReplaceAll(st.flag, "-", "_"), shown(st, st.value.String())))
	}
	return slog.GroupValue(attrs...)
}

// Masked is what stands in the log and the docs for a secret that is set.
const Masked = "[MASKED]"

// shown is v as logs and docs show it: a secret is masked, except that a URL keeps all but its
// password (postgres://order_service:xxxxx@postgres:5432/meshmart_order), which says where a
// service connects without saying how it signs in.
func shown(st setting, v string) string {
	if !st.secret || v == "" {
		return v
	}
	if u, err := url.Parse(v); err == nil && u.Scheme != "" && u.Host != "" {
		return u.Redacted()
	}
	return Masked
}

func isZero(v flag.Value) bool {
	return reflect.ValueOf(v).Elem().IsZero()
}

// settingsOf reads the tagged fields of cfg, a pointer to a struct.
func settingsOf(cfg any) ([]setting, error) {
	rv := reflect.ValueOf(cfg)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		return nil, fmt.Errorf("app: settings must be a pointer to a struct, not %T", cfg)
	}
	rv = rv.Elem()
	var list []setting
	for i := range rv.NumField() {
		f := rv.Type().Field(i)
		name := f.Tag.Get("flag")
		if name == "" {
			continue
		}
		v, err := valueOf(rv.Field(i).Addr().Interface())
		if err != nil {
			return nil, fmt.Errorf("app: setting %s (%s.%s): %w", name, rv.Type(), f.Name, err)
		}
		list = append(list, setting{
			flag: name, env: f.Tag.Get("env"), usage: f.Tag.Get("usage"),
			required: f.Tag.Get("required"), secret: f.Tag.Get("secret") == "true",
			value: v, def: v.String(),
		})
	}
	return list, nil
}

func valueOf(p any) (flag.Value, error) {
	switch p := p.(type) {
	case *string:
		return (*stringValue)(p), nil
	case *bool:
		return (*boolValue)(p), nil
	case *int:
		return (*intValue)(p), nil
	case *float64:
		return (*floatValue)(p), nil
	case *time.Duration:
		return (*durationValue)(p), nil
	case *[]string:
		return (*listValue)(p), nil
	}
	return nil, fmt.Errorf("unsupported type %T", p)
}

type stringValue string

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

type boolValue bool

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	*v = boolValue(b)
	return err
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }

type intValue int

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	*v = intValue(n)
	return err
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

type floatValue float64

func (v *floatValue) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	*v = floatValue(f)
	return err
}
func (v *floatValue) String() string { return strconv.FormatFloat(float64(*v), 'g', -1, 64) }

type durationValue time.Duration

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	*v = durationValue(d)
	return err
}
func (v *durationValue) String() string { return time.Duration(*v).String() }

type listValue []string

func (v *listValue) Set(s string) error {
	*v = nil
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*v = append(*v, part)
		}
	}
	return nil
}
func (v *listValue) String() string { return strings.Join(*v, ",") }
