package app

import (
	"fmt"
	"strings"
)

// Table renders the settings of cfgs (pointers to structs, as for Bind) as a Markdown table:
// flag, environment variable, default and description, one row a setting. docs/configuration.md
// is made of such tables, and a test keeps it in step with the code.
func Table(cfgs ...any) (string, error) {
	var b strings.Builder
	b.WriteString("| Flag | Environment | Default | Description |\n| --- | --- | --- | --- |\n")
	for _, cfg := range cfgs {
		list, err := settingsOf(cfg)
		if err != nil {
			return "", err
		}
		for _, st := range list {
			def := "—"
			if d := shown(st, st.def); d != "" {
				def = "`" + d + "`"
			}
			usage := st.usage
			if st.required != "" {
				usage += ". Required: " + st.required
			}
			if st.secret {
				usage += ". Secret: masked in the log; " + st.env + FileSuffix + " names a file to read it from"
			}
			fmt.Fprintf(&b, "| `-%s` | `%s` | %s | %s |\n", st.flag, st.env, def, strings.ReplaceAll(usage, "|", `\|`))
		}
	}
	return b.String(), nil
}
