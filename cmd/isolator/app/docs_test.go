package app

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const policyDoc = "../../../docs/policy.md"

// docBlock is one fenced code block of a Markdown file.
type docBlock struct {
	info    string // the fence's info string: "yaml", "yaml invalid", "json"
	section string // the heading above it
	line    int
	text    string
}

func readDocBlocks(t *testing.T, file string) []docBlock {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks  []docBlock
		cur     *docBlock
		section string
		n       int
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		n++
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &docBlock{info: strings.TrimSpace(strings.TrimPrefix(line, "```")), section: section, line: n}
		case cur != nil && line == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		case strings.HasPrefix(line, "#"):
			section = strings.TrimSpace(strings.TrimLeft(line, "#"))
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s:%d: unclosed code block", file, cur.line)
	}
	return blocks
}

// TestPolicyDocExamples runs `isolator policy validate` on every YAML block of
// docs/policy.md, so the reference can't drift from the code. A block marked
// "yaml invalid" must be refused. The valid blocks of one worked example are also
// validated together, as one cluster's ConfigMaps would be merged.
func TestPolicyDocExamples(t *testing.T) {
	blocks := readDocBlocks(t, policyDoc)
	dir := t.TempDir()
	sections := map[string][]string{}
	teams := map[string]bool{}
	var order []string
	checked := 0
	for i, b := range blocks {
		if !strings.HasPrefix(b.info, "yaml") {
			continue
		}
		file := filepath.Join(dir, fmt.Sprintf("block-%d.yaml", i))
		if err := os.WriteFile(file, []byte(b.text), 0o644); err != nil {
			t.Fatal(err)
		}
		wantCode := ExitOK
		switch b.info {
		case "yaml":
		case "yaml invalid":
			wantCode = ExitFailure
		case "yaml team":
			// A cluster policy and a team policy that builds on it: they are
			// validated together, below, without warnings.
			if _, seen := sections[b.section]; !seen {
				order = append(order, b.section)
			}
			sections[b.section] = append(sections[b.section], file)
			teams[b.section] = true
			checked++
			continue
		default:
			t.Errorf("%s:%d: unknown info string %q (yaml, yaml invalid or yaml team)", policyDoc, b.line, b.info)
		}
		code, stdout, stderr := run(t, "", "policy", "validate", file)
		if code != wantCode {
			t.Errorf("%s:%d (%s): validate exits %d, want %d\n%s%s", policyDoc, b.line, b.section, code, wantCode, stdout, stderr)
		}
		if wantCode == ExitOK && strings.Contains(stdout, "warning:") {
			t.Errorf("%s:%d (%s): the example has warnings:\n%s", policyDoc, b.line, b.section, stdout)
		}
		checked++
		if wantCode == ExitOK {
			if _, seen := sections[b.section]; !seen {
				order = append(order, b.section)
			}
			sections[b.section] = append(sections[b.section], file)
		}
	}
	if checked < 10 {
		t.Errorf("only %d YAML blocks found in %s", checked, policyDoc)
	}
	for _, sec := range order {
		files := sections[sec]
		if len(files) < 2 {
			continue
		}
		// Blocks of one section that are steps of the same policy (before and after)
		// share a name and can't be merged; the others must merge cleanly.
		code, stdout, stderr := run(t, "", append([]string{"policy", "validate"}, files...)...)
		if code != ExitOK && !strings.Contains(stdout, "are both named") {
			t.Errorf("%s: the section's policies do not validate together (exit %d)\n%s%s", sec, code, stdout, stderr)
		}
		if teams[sec] && (code != ExitOK || strings.Contains(stdout, "warning:")) {
			t.Errorf("%s: the cluster and team policies do not validate together without warnings (exit %d)\n%s%s", sec, code, stdout, stderr)
		}
	}
}

// TestPolicyDocJSON checks that the explain -o json line shown in docs/policy.md is
// what explain prints for the examples.
func TestPolicyDocJSON(t *testing.T) {
	golden, err := os.ReadFile("testdata/explain/examples.json.golden")
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, b := range readDocBlocks(t, policyDoc) {
		if b.info != "json" {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(b.text), "\n") {
			found++
			if !strings.Contains(string(golden), line+"\n") {
				t.Errorf("%s:%d: %s is not a line explain prints for manifests/examples", policyDoc, b.line, line)
			}
		}
	}
	if found == 0 {
		t.Errorf("no JSON example in %s", policyDoc)
	}
}
