package app

import (
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// TestHelpTeaches walks the whole command tree: every command of isolator's own shows
// examples, and no flag's help has a back-quoted word, which pflag would print as the
// flag's value name (`--backstop isolator policy backstop`).
func TestHelpTeaches(t *testing.T) {
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() == "help" || c.Name() == "completion" || c.Hidden {
			return
		}
		if c.Runnable() && c.Example == "" {
			t.Errorf("%q has no examples in its --help", c.CommandPath())
		}
		check := func(f *pflag.Flag) {
			if strings.Contains(f.Usage, "`") {
				name, _ := pflag.UnquoteUsage(f)
				t.Errorf("%s --%s: help shows %q as the value name; drop the back quotes", c.CommandPath(), f.Name, name)
			}
		}
		c.LocalFlags().VisitAll(check)
		c.InheritedFlags().VisitAll(check)
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(NewRootCommand(streams{}))
}
