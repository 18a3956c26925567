package bench

import (
	"strings"
	"testing"
)

// TestTargets prints a target as met only when every column meets its bound, inclusive, in its
// direction, and leaves a target that no column measured out of the table, naming it below.
func TestTargets(t *testing.T) {
	tb := &table{}
	sqlite, postgres := tb.column("sqlite"), tb.column("postgres")
	sqlite.figure("cpu/bare", 1.3) // at most 1.3: met at the bound
	postgres.figure("cpu/bare", 1.2)
	sqlite.figure("rate/bare", 0.95) // at least 0.90: met in one column only
	postgres.figure("rate/bare", 0.85)
	sqlite.figure("RSS user", 24) // only one column measured it
	if strings.Contains(tb.targets(), "The floor under the CreateOrder rows") {
		t.Errorf("a floor is printed with no ceiling measured:\n%s", tb.targets())
	}
	if strings.Contains(tb.targets(), "The ceiling over the calls/s vs bare grpc-go row") {
		t.Errorf("a CPU ceiling is printed with none measured:\n%s", tb.targets())
	}
	if strings.Contains(tb.targets(), "The floor under the idle RSS rows") {
		t.Errorf("an RSS floor is printed with no memory of its own measured:\n%s", tb.targets())
	}
	if strings.Contains(tb.targets(), "The ceiling over the calls/s rows") {
		t.Errorf("a ceiling is printed with no bare row measured:\n%s", tb.targets())
	}
	sqlite.figure("bare rate/kratos", 1.444)
	sqlite.figure("bare rate/go-zero", 1.37)
	sqlite.figure("bare rate/kratos pinned", 1.45)
	sqlite.figure("bare rate/go-zero pinned", 1.38)
	postgres.figure("bare rate/kratos", 1.38) // shared cores only
	postgres.figure("bare rate/go-zero", 1.25)
	sqlite.figure("ceiling CreateOrder/GetUser", 0.0612)
	postgres.figure("ceiling CreateOrder/GetUser", 0.05)
	sqlite.figure("rate/bare by CPU", 0.923)
	sqlite.figure("own user", 19.4)
	sqlite.figure("own gateway", 9)
	out := tb.targets()
	if !strings.Contains(out, "of bare's calls/s: sqlite 0.92×. What the chassis spends") {
		t.Errorf("the CPU's ceiling over calls/s vs bare is not printed per column:\n%s", out)
	}
	if !strings.Contains(out, "what each process holds of its own (RssAnon: heap, stacks, GC metadata) was sqlite: user 19, gateway 9 MiB.") {
		t.Errorf("the idle RSS floor is not printed per column:\n%s", out)
	}
	if !strings.Contains(out, "GetUser's platform CPU per call ÷ CreateOrder's of GetUser's (sqlite 0.06×, postgres 0.05×;") {
		t.Errorf("the CreateOrder floor is not printed per column:\n%s", out)
	}
	if !strings.Contains(out, "whose own calls/s were (in brackets: on a core of its own) sqlite 1.44× (1.45×) kratos', 1.37× (1.38×) go-zero's; postgres 1.38× kratos', 1.25× go-zero's.") {
		t.Errorf("bare grpc-go's calls/s against the peers are not printed per column:\n%s", out)
	}

	for _, tc := range []struct{ label, want string }{
		{"server CPU per call", "| Chassis vs bare grpc-go, mutual TLS both: server CPU per call | ≤ 1.3× | 1.30× | 1.20× | yes |"},
		{"calls/s", "| Chassis vs bare grpc-go, mutual TLS both: calls/s | ≥ 0.9× | 0.95× | 0.85× | no |"},
		{"RSS", "| Idle RSS per replica, user service | ≤ 25 MiB | 24 MiB | — | no figure |"},
	} {
		if !strings.Contains(out, tc.want+"\n") {
			t.Errorf("%s: no line %q in\n%s", tc.label, tc.want, out)
		}
	}
	if strings.Contains(out, "| Chassis vs go-kratos: calls/s |") {
		t.Errorf("a target that no column measured has a row:\n%s", out)
	}
	if !strings.Contains(out, "Not measured by this benchmark: Chassis vs bare grpc-go: allocated bytes per call;") {
		t.Errorf("the targets that no column measured are not named:\n%s", out)
	}
}
