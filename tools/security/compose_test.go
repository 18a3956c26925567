package security

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/meshmart/meshmart/pkg/testkit"
)

// composeFile is docker-compose.yml with its anchors and `<<` merges resolved.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	User        string `yaml:"user"`
	Volumes     []any  `yaml:"volumes"`
	Environment any    `yaml:"environment"`
	Ports       []any  `yaml:"ports"`
}

// env returns the service's environment, given as a map or as a list of KEY=VALUE.
func (s composeService) env() map[string]string {
	out := map[string]string{}
	switch e := s.Environment.(type) {
	case map[string]any:
		for k, v := range e {
			out[k] = fmt.Sprint(v)
		}
	case []any:
		for _, kv := range e {
			k, v, _ := strings.Cut(fmt.Sprint(kv), "=")
			out[k] = v
		}
	}
	return out
}

// volumeSources returns the sources of the service's mounts (named volumes or host paths),
// each with whether it is mounted read-only.
func (s composeService) volumeSources() map[string]bool {
	out := map[string]bool{}
	for _, v := range s.Volumes {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			out[parts[0]] = len(parts) > 2 && slices.Contains(strings.Split(parts[2], ","), "ro")
		case map[string]any:
			ro, _ := v["read_only"].(bool)
			out[fmt.Sprint(v["source"])] = ro
		}
	}
	return out
}

// published returns the service's port mappings as the short syntax writes them.
func (s composeService) published() []string {
	var out []string
	for _, p := range s.Ports {
		switch p := p.(type) {
		case map[string]any:
			out = append(out, fmt.Sprintf("%v:%v:%v", p["host_ip"], p["published"], p["target"]))
		default:
			out = append(out, fmt.Sprint(p))
		}
	}
	return out
}

// replicaName matches a replica of one of meshmart's services (user-1, ...) and names the service.
var replicaName = regexp.MustCompile(`^(user|payment|order)-\d+$`)

// secretName is an environment variable that names a secret; its value must be a file's path.
var secretName = regexp.MustCompile(`(PASSWORD|SECRET|TOKEN|KEY)$`)

// Attack: break out of one container into another's secrets: read the token-signing key from a
// payment or order container, or from one that runs as the same uid as a user replica; or read
// secrets from the environment (docker inspect), or reach Consul from the network.
//
// Defences, in docker-compose.yml: only the user replicas (and the setup step that writes it)
// mount the volume holding the signing key; each service runs as a non-root uid of its own; only
// the user replicas are told where a signing key is; secrets are files, never environment values
// (bar the development PostgreSQL URLs); Consul's API is published on 127.0.0.1 only. Undoing any
// of these fails this test. It reads the file only: no Docker is needed.
func TestComposeKeepsSecretsApart(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testkit.RepoRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	if len(f.Services) == 0 {
		t.Fatal("docker-compose.yml has no services")
	}

	// The signing key's volume, and the CA's (its key issues any identity).
	for volume, want := range map[string][]string{
		"user-secrets": {"setup", "user-1", "user-2"},
		"ca":           {"setup"},
	} {
		var got []string
		for name, s := range f.Services {
			if ro, ok := s.volumeSources()[volume]; ok {
				got = append(got, name)
				if replicaName.MatchString(name) && !ro {
					t.Errorf("%s mounts %s read-write, want read-only", name, volume)
				}
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("volume %s is mounted by %v, want only %v", volume, got, want)
		}
	}

	uids := map[string]string{} // service -> uid
	replicas := 0
	for name, s := range f.Services {
		m := replicaName.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		replicas++
		svc := m[1]
		uid, _, _ := strings.Cut(s.User, ":")
		if uid == "" || uid == "0" || uid == "root" {
			t.Errorf("%s runs as user %q, want a uid of its own that is not root", name, s.User)
		}
		if prev, ok := uids[svc]; ok && prev != uid {
			t.Errorf("the %s replicas run as uids %s and %s, want one", svc, prev, uid)
		}
		uids[svc] = uid
		if _, ok := s.env()["MESHMART_SIGNING_KEY"]; ok && svc != "user" {
			t.Errorf("%s is given MESHMART_SIGNING_KEY; only the user service signs", name)
		}
	}
	if replicas < 3 {
		t.Fatalf("found %d replicas of user, payment and order in docker-compose.yml, want at least 3", replicas)
	}
	for svc, uid := range uids {
		for other, o := range uids {
			if svc < other && uid == o {
				t.Errorf("%s and %s run as the same uid %s", svc, other, uid)
			}
		}
	}

	for name, s := range f.Services {
		for k, v := range s.env() {
			if !strings.HasPrefix(k, "MESHMART_") && !strings.HasPrefix(k, "CONSUL_") && k != "DATABASE_URL" {
				continue
			}
			if k == "MESHMART_ADMIN_EMAILS" {
				t.Errorf("%s sets %s: no email list makes an admin", name, k)
			}
			if secretName.MatchString(k) && !strings.HasPrefix(v, "/") {
				t.Errorf("%s: %s holds a value (%d characters), want the path of a secret file", name, k, len(v))
			}
			if u, err := url.Parse(v); err == nil && u.User != nil {
				if _, hasPassword := u.User.Password(); hasPassword && !devPostgresURL(k, u) {
					t.Errorf("%s: %s carries a password in its URL", name, k)
				}
			}
		}
	}

	consul, ok := f.Services["consul"]
	if !ok {
		t.Fatal("docker-compose.yml has no consul service")
	}
	for _, p := range consul.published() {
		if !strings.HasPrefix(p, "127.0.0.1:") {
			t.Errorf("consul publishes %q, want it on 127.0.0.1 only", p)
		}
	}
}

// devPostgresURL reports whether a URL is a development PostgreSQL URL of the compose stack: a
// service's own role (password = role name) on the postgres container.
func devPostgresURL(key string, u *url.URL) bool {
	pw, _ := u.User.Password()
	return key == "DATABASE_URL" && u.Scheme == "postgres" && u.Hostname() == "postgres" && pw == u.User.Username()
}
