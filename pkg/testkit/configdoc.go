package testkit

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/meshmart/meshmart/pkg/app"
)

// ConfigDoc is the file, relative to the repository root, that lists every setting: one table
// for the chassis and one per service, each between "<!-- begin NAME settings -->" and
// "<!-- end NAME settings -->".
const ConfigDoc = "docs/configuration.md"

// CheckConfigDoc checks that the NAME section of ConfigDoc is app.Table(cfgs...), or with update
// rewrites it so (run `go test -p 1 ... -update` when rewriting several sections at once, since
// they share the file). The sections themselves are written by hand, once.
func CheckConfigDoc(t testing.TB, update bool, name string, cfgs ...any) {
	t.Helper()
	table, err := app.Table(cfgs...)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(RepoRoot(t), ConfigDoc)
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	begin, end := []byte("<!-- begin "+name+" settings -->\n"), []byte("<!-- end "+name+" settings -->")
	i, j := bytes.Index(doc, begin), bytes.Index(doc, end)
	if i < 0 || j < i {
		t.Fatalf("%s has no %q ... %q section", ConfigDoc, begin, end)
	}
	i += len(begin)
	if string(doc[i:j]) == table {
		return
	}
	if !update {
		t.Fatalf("the %s settings in %s are not those of the code; run this test with -update to rewrite them.\nwant:\n%s", name, ConfigDoc, table)
	}
	out := append(append(append([]byte{}, doc[:i]...), table...), doc[j:]...)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("rewrote the %s settings in %s", name, ConfigDoc)
}
