package app_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshmart/meshmart/pkg/app"
)

// example has a setting of every supported type.
type example struct {
	Addr     string        `flag:"addr" env:"EX_ADDR" usage:"listen address"`
	Verbose  bool          `flag:"verbose" env:"EX_VERBOSE" usage:"say more"`
	Workers  int           `flag:"workers" env:"EX_WORKERS" usage:"how many workers"`
	Rate     float64       `flag:"rate" env:"EX_RATE" usage:"calls per second"`
	Every    time.Duration `flag:"every" env:"EX_EVERY" usage:"how often"`
	Tags     []string      `flag:"tags" env:"EX_TAGS" usage:"comma-separated tags"`
	Password string        `flag:"password" env:"EX_PASSWORD" usage:"the password" secret:"true" required:"it signs in"`
	internal string        // untagged: not a setting
}

func newFlagSet() *flag.FlagSet {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestBindPrecedence(t *testing.T) {
	t.Parallel()
	cfg := example{Addr: ":1", Workers: 2, Rate: 1, Every: time.Second, internal: "kept"}
	fs := newFlagSet()
	env := envOf(map[string]string{"EX_WORKERS": "3", "EX_RATE": "12.5", "EX_TAGS": "blue, canary", "EX_EVERY": "7s"})
	if _, err := app.Bind(fs, env, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"-rate", "3", "-verbose", "-password", "pw"}); err != nil {
		t.Fatal(err)
	}
	want := example{Addr: ":1", Verbose: true, Workers: 3, Rate: 3, Every: 7 * time.Second, Tags: []string{"blue", "canary"}, Password: "pw", internal: "kept"}
	if cfg.Addr != want.Addr || cfg.Verbose != want.Verbose || cfg.Workers != want.Workers || cfg.Rate != want.Rate ||
		cfg.Every != want.Every || strings.Join(cfg.Tags, "|") != "blue|canary" || cfg.Password != want.Password || cfg.internal != want.internal {
		t.Errorf("config = %+v\nwant %+v (default < environment < flag)", cfg, want)
	}
	if f := fs.Lookup("workers"); f == nil || f.Usage != "how many workers (env EX_WORKERS)" {
		t.Errorf("the flag's usage = %v, want it to name its environment variable", f)
	}
}

func TestBindBadEnvironment(t *testing.T) {
	t.Parallel()
	var cfg example
	_, err := app.Bind(newFlagSet(), envOf(map[string]string{"EX_EVERY": "soon", "EX_WORKERS": "many"}), &cfg)
	if err == nil || !strings.Contains(err.Error(), `EX_EVERY="soon"`) || !strings.Contains(err.Error(), `EX_WORKERS="many"`) {
		t.Errorf("bad environment values = %v, want an error naming each variable", err)
	}
	type odd struct {
		Ch chan int `flag:"ch" env:"EX_CH"`
	}
	if _, err := app.Bind(newFlagSet(), nil, &odd{}); err == nil {
		t.Error("a setting of an unsupported type was bound")
	}
	if _, err := app.Bind(newFlagSet(), nil, example{}); err == nil {
		t.Error("a struct that is not a pointer was bound")
	}
}

func TestCheckRequired(t *testing.T) {
	t.Parallel()
	var cfg example
	fs := newFlagSet()
	settings, err := app.Bind(fs, envOf(nil), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = settings.Check()
	if err == nil || err.Error() != "-password (EX_PASSWORD) is required: it signs in" {
		t.Errorf("Check without the password = %v, want one error naming flag and variable", err)
	}
	if err := fs.Parse([]string{"-password", "pw"}); err != nil {
		t.Fatal(err)
	}
	if err := settings.Check(); err != nil {
		t.Errorf("Check with the password: %v", err)
	}
}

func TestSettingsLogMasksSecrets(t *testing.T) {
	t.Parallel()
	cfg := example{Addr: ":1", Password: "hunter2", Tags: []string{"a", "b"}}
	settings, err := app.Bind(newFlagSet(), envOf(nil), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("configured", "settings", settings)
	if strings.Contains(buf.String(), "hunter2") {
		t.Fatalf("the secret reached the log: %s", buf.String())
	}
	var line struct{ Settings map[string]string }
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"addr": ":1", "verbose": "false", "workers": "0", "rate": "0", "every": "0s", "tags": "a,b", "password": app.Masked}
	if len(line.Settings) != len(want) {
		t.Errorf("logged settings = %v, want %v", line.Settings, want)
	}
	for k, v := range want {
		if line.Settings[k] != v {
			t.Errorf("logged %s = %q, want %q", k, line.Settings[k], v)
		}
	}
}

func TestTable(t *testing.T) {
	t.Parallel()
	table, err := app.Table(&example{Addr: ":1", Every: time.Second, Password: "hunter2"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| Flag | Environment | Default | Description |\n| --- | --- | --- | --- |\n",
		"| `-addr` | `EX_ADDR` | `:1` | listen address |\n",
		"| `-every` | `EX_EVERY` | `1s` | how often |\n",
		"| `-tags` | `EX_TAGS` | — | comma-separated tags |\n",
		"| `-password` | `EX_PASSWORD` | `" + app.Masked + "` | the password. Required: it signs in. Secret: masked in the log; EX_PASSWORD_FILE names a file to read it from |\n",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("the table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "hunter2") || strings.Contains(table, "internal") {
		t.Errorf("the table shows a secret or an untagged field:\n%s", table)
	}
}

func TestHelpHidesSecretsFromTheEnvironment(t *testing.T) {
	t.Parallel()
	fs := newFlagSet()
	var help bytes.Buffer
	fs.SetOutput(&help)
	cfg := example{}
	if _, err := app.Bind(fs, envOf(map[string]string{"EX_PASSWORD": "hunter2", "EX_ADDR": ":9"}), &cfg); err != nil {
		t.Fatal(err)
	}
	fs.PrintDefaults()
	if strings.Contains(help.String(), "hunter2") {
		t.Errorf("-h shows the secret from the environment:\n%s", help.String())
	}
	if cfg.Password != "hunter2" || cfg.Addr != ":9" {
		t.Errorf("the environment was not applied: %+v", cfg)
	}
}

func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	secret, empty := file("password", "hunter2\n"), file("empty", "\n")

	var cfg example
	if _, err := app.Bind(newFlagSet(), envOf(map[string]string{"EX_PASSWORD_FILE": secret}), &cfg); err != nil || cfg.Password != "hunter2" {
		t.Errorf("from EX_PASSWORD_FILE: password %q, error %v; want hunter2 and no error", cfg.Password, err)
	}
	cfg = example{}
	env := map[string]string{"EX_PASSWORD": "from-env", "EX_PASSWORD_FILE": secret}
	if _, err := app.Bind(newFlagSet(), envOf(env), &cfg); err != nil || cfg.Password != "from-env" {
		t.Errorf("both set: password %q, error %v; want the variable to win", cfg.Password, err)
	}
	// Only secrets are read from files: a _FILE for another setting is not this package's.
	cfg = example{}
	if _, err := app.Bind(newFlagSet(), envOf(map[string]string{"EX_ADDR_FILE": secret}), &cfg); err != nil || cfg.Addr != "" {
		t.Errorf("EX_ADDR_FILE: addr %q, error %v; want it ignored", cfg.Addr, err)
	}
	for name, path := range map[string]string{"missing": filepath.Join(dir, "nothing"), "empty": empty} {
		_, err := app.Bind(newFlagSet(), envOf(map[string]string{"EX_PASSWORD_FILE": path}), &example{})
		if err == nil || !strings.Contains(err.Error(), "EX_PASSWORD_FILE") {
			t.Errorf("%s file: error %v, want one naming EX_PASSWORD_FILE", name, err)
		}
	}
}

func TestSecretURLsShowAllButThePassword(t *testing.T) {
	t.Parallel()
	type dsn struct {
		Database string `flag:"database" env:"EX_DATABASE_URL" usage:"where" secret:"true"`
	}
	cfg := dsn{}
	env := map[string]string{"EX_DATABASE_URL": "postgres://order:s3cret@db:5432/orders?sslmode=verify-full"}
	settings, err := app.Bind(newFlagSet(), envOf(env), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("configured", "settings", settings)
	if strings.Contains(buf.String(), "s3cret") || !strings.Contains(buf.String(), "postgres://order:xxxxx@db:5432/orders") {
		t.Errorf("logged %s; want the URL with its password masked", buf.String())
	}
}
