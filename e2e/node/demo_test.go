//go:build e2e

package node_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// demoTable is one table the demo printed: each row's columns by header.
type demoTable []map[string]string

var demoColumns = regexp.MustCompile(`\s{2,}`)

// demoTables finds the tables in the demo's output: a header line starting with
// NAMESPACE, then rows up to the first blank line.
func demoTables(out string) []demoTable {
	var tables []demoTable
	var header []string
	for _, line := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(line, "NAMESPACE "):
			header = demoColumns.Split(strings.TrimSpace(line), -1)
			tables = append(tables, nil)
		case strings.TrimSpace(line) == "":
			header = nil
		case header != nil:
			cols := demoColumns.Split(strings.TrimSpace(line), len(header))
			row := map[string]string{}
			for i, c := range cols {
				row[header[i]] = c
			}
			tables[len(tables)-1] = append(tables[len(tables)-1], row)
		}
	}
	return tables
}

// TestDemo runs the demo (`make demo`, as root) and holds its tables to what the
// README promises: every admitted pod is placed by the webhook's decision; runc-rc pods
// run with containerd's runc handler; kata-rc pods are Pending with the scheduler's
// reason until `isolator node install` has labelled the node, and then run with the
// kata handler (the stand-in shim); the refused pod is never run. When the demo ends,
// nothing of its node is left running.
func TestDemo(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	demo := filepath.Join(dir, "demo")
	if out, err := exec.Command("go", "build", "-o", demo, "github.com/isolator-dev/isolator/e2e/demo").CombinedOutput(); err != nil {
		t.Fatalf("build the demo: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, demo)
	cmd.Env = append(os.Environ(), "DEMO_EXIT=1", "ISOLATOR_BIN="+releaseBin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	t.Logf("demo output:\n%s", out)
	tables := demoTables(string(out))
	if len(tables) != 2 {
		t.Fatalf("the demo printed %d tables, want 2 (before and after the Kata install)", len(tables))
	}
	before, after := tables[0], tables[1]
	if len(before) != 9 || len(after) != len(before) {
		t.Fatalf("%d and %d rows, want 9 (7 example pods and 2 of the Deployment's)", len(before), len(after))
	}
	classes := map[string]int{}
	for i, row := range before {
		class, pod := row["RUNTIMECLASS"], row["NAMESPACE"]+"/"+row["POD"]
		classes[class]++
		wantBefore, wantAfter := map[string]string{
			"runc-rc": "Running (runc)",
			"kata-rc": "Pending: 1 node(s) didn't match Pod's node affinity/selector.",
			"DENIED":  "-",
		}[class], map[string]string{
			"runc-rc": "Running (runc)",
			"kata-rc": "Running (kata, the stand-in)",
			"DENIED":  "-",
		}[class]
		if row["STATUS"] != wantBefore {
			t.Errorf("%s (%s) before the install: STATUS %q, want %q", pod, class, row["STATUS"], wantBefore)
		}
		if after[i]["STATUS"] != wantAfter {
			t.Errorf("%s (%s) after the install: STATUS %q, want %q", pod, class, after[i]["STATUS"], wantAfter)
		}
	}
	if classes["runc-rc"] != 2 || classes["kata-rc"] != 6 || classes["DENIED"] != 1 {
		t.Errorf("classes %v, want 2 runc-rc, 6 kata-rc and 1 DENIED (manifests/examples)", classes)
	}
	for _, want := range []string{"(kata-rc): hello from ", "(runc-rc): hello from ", "isolator.dev/kata-runtime=true"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	// The demo's workload (e2e/demo/app) runs as a process named app.
	comms, _ := filepath.Glob("/proc/[0-9]*/comm")
	for _, c := range comms {
		if data, err := os.ReadFile(c); err == nil && string(data) == "app\n" {
			t.Errorf("the demo's pods outlived it: %s", filepath.Dir(c))
		}
	}
}
