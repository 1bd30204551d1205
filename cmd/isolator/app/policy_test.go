package app

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/isolator-dev/isolator/policy"
)

const (
	examplePolicies = "../../../manifests/examples/policies.yaml"
	examplePods     = "../../../manifests/examples/pods.yaml"
	validateData    = "../../../policy/testdata/validate"
)

// update rewrites golden files instead of comparing with them: UPDATE_GOLDEN=1 go test.
var update = os.Getenv("UPDATE_GOLDEN") != ""

// run executes the isolator command line as main does, with stdin and captured outputs.
func run(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func checkGolden(t *testing.T, golden string, got string) {
	t.Helper()
	if update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with UPDATE_GOLDEN=1)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (refresh with UPDATE_GOLDEN=1 if intended)\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

func TestValidateFiveMistakes(t *testing.T) {
	code, stdout, stderr := run(t, "", "policy", "validate", filepath.Join(validateData, "five-mistakes.yaml"))
	if code != ExitFailure {
		t.Errorf("exit %d, want %d", code, ExitFailure)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	wantPaths := []string{
		": spec.rules[0].name: Invalid value",
		": spec.rules[1].runtimeClass: Not found",
		": spec.rules[2].mode: Unsupported value",
		": spec.rules[2].match.anyImage[0]: Invalid value",
		": spec.rules[3].match: Required value",
	}
	if len(lines) != len(wantPaths) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(wantPaths), stdout)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, filepath.Join(validateData, "five-mistakes.yaml")+": ") || !strings.Contains(l, wantPaths[i]) {
			t.Errorf("line %d = %q, want the file and %q", i, l, wantPaths[i])
		}
	}
	if stderr != "Error: invalid policy\n" {
		t.Errorf("stderr = %q", stderr)
	}
}

func TestValidate(t *testing.T) {
	valid := "apiVersion: isolator.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: team}\nspec:\n  runtimeClasses: [{name: runc-rc}]\n"
	cases := []struct {
		name       string
		stdin      string
		args       []string
		code       int
		stdout     []string // substrings, in order
		stderr     []string
		exactLines int // when > 0, the number of stdout lines
	}{
		{name: "examples are valid", args: []string{examplePolicies}, code: ExitOK,
			stdout: []string{"policies.yaml (document 1) (ConfigMap platform): valid (4 rules)", "policies.yaml (document 2) (ConfigMap ci): valid (2 rules)"}, exactLines: 2},
		{name: "stdin", stdin: valid, args: []string{"-"}, code: ExitOK, stdout: []string{"stdin: valid (0 rules)"}, exactLines: 1},
		{name: "every file is read", stdin: valid, args: []string{examplePolicies, "-"}, code: ExitOK,
			stdout: []string{"ConfigMap platform): valid", "ConfigMap ci): valid", "stdin: valid"}, exactLines: 3},
		{name: "the same policy twice", args: []string{examplePolicies, examplePolicies}, code: ExitFailure,
			stdout: []string{`are both named "ci"`, `are both named "platform"`}},
		{name: "merge warnings", args: []string{filepath.Join(validateData, "valid-merge.yaml")}, code: ExitOK,
			stdout: []string{"warning: team-a and team-b disagree on whether kata-rc is sandboxed", "warning: team-b ranks gvisor-rc above kata-rc", "valid (1 rule)"}},
		{name: "empty file", args: []string{filepath.Join(validateData, "empty.yaml")}, code: ExitFailure,
			stdout: []string{"empty.yaml: no RuntimePolicy or policy ConfigMap found"}, stderr: []string{"Error: invalid policy"}},
		{name: "parse error", args: []string{filepath.Join(validateData, "unknown-field.yaml")}, code: ExitFailure,
			stdout: []string{"spec.rules[0].matches: Forbidden: unknown field", "spec.runtimeClasses[0].sandbox: Forbidden"}, exactLines: 2},
		{name: "missing file", args: []string{"does-not-exist.yaml"}, code: ExitUsage,
			stderr: []string{"Error: open does-not-exist.yaml: no such file or directory", "Run 'isolator policy validate --help' for usage."}},
		{name: "no arguments", args: nil, code: ExitUsage, stderr: []string{"requires at least 1 arg", "isolator policy validate --help"}},
		{name: "unknown flag", args: []string{"--strict", examplePolicies}, code: ExitUsage, stderr: []string{"unknown flag: --strict"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(t, tc.stdin, append([]string{"policy", "validate"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			containsInOrder(t, "stdout", stdout, tc.stdout)
			containsInOrder(t, "stderr", stderr, tc.stderr)
			if tc.stderr == nil && code == ExitOK && stderr != "" {
				t.Errorf("stderr = %q, want nothing", stderr)
			}
			if tc.exactLines > 0 {
				if n := strings.Count(stdout, "\n"); n != tc.exactLines {
					t.Errorf("stdout has %d lines, want %d:\n%s", n, tc.exactLines, stdout)
				}
			}
		})
	}
}

func containsInOrder(t *testing.T, what, s string, subs []string) {
	t.Helper()
	rest := s
	for _, sub := range subs {
		i := strings.Index(rest, sub)
		if i < 0 {
			t.Errorf("%s does not contain %q (in this order):\n%s", what, sub, s)
			return
		}
		rest = rest[i+len(sub):]
	}
}

// TestExplainJSONContract checks the shape `explain -o json` promises: one JSON object
// per line per pod, with exactly the keys pod, runtimeClass, rule, action and reason,
// all strings.
func TestExplainJSONContract(t *testing.T) {
	code, stdout, stderr := run(t, "", "policy", "explain", "--policy", examplePolicies, "-f", examplePods, "-o", "json")
	if code != ExitOK || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != 7 {
		t.Fatalf("got %d lines, want one per example pod (7):\n%s", len(lines), stdout)
	}
	wantKeys := []string{"action", "pod", "reason", "rule", "runtimeClass"}
	actions := []string{"set", "keep", "replace", "deny", "none"}
	for i, line := range lines {
		var obj map[string]any
		dec := json.NewDecoder(strings.NewReader(line))
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("line %d is not a JSON object: %v\n%s", i, err, line)
		}
		if dec.More() {
			t.Errorf("line %d holds more than one JSON value: %s", i, line)
		}
		var keys []string
		for k, v := range obj {
			keys = append(keys, k)
			if _, ok := v.(string); !ok {
				t.Errorf("line %d: %s is %T, want a string", i, k, v)
			}
		}
		slices.Sort(keys)
		if !slices.Equal(keys, wantKeys) {
			t.Errorf("line %d keys = %v, want %v", i, keys, wantKeys)
		}
		if !slices.Contains(actions, obj["action"].(string)) {
			t.Errorf("line %d action %q is not one of %v", i, obj["action"], actions)
		}
		if pod, _ := obj["pod"].(string); strings.Count(pod, "/") != 1 {
			t.Errorf("line %d pod %q is not <namespace>/<name>", i, pod)
		}
		if rule, _ := obj["rule"].(string); rule != "" && strings.Count(rule, "/") != 1 {
			t.Errorf("line %d rule %q is not <configmap-or-file>/<rule>", i, rule)
		}
	}
}

func TestExplainGolden(t *testing.T) {
	for _, tc := range []struct{ output, golden string }{
		{"text", "testdata/explain/examples.txt.golden"},
		{"json", "testdata/explain/examples.json.golden"},
	} {
		t.Run(tc.output, func(t *testing.T) {
			code, stdout, stderr := run(t, "", "policy", "explain", "--policy", examplePolicies, "-f", examplePods, "-o", tc.output)
			if code != ExitOK || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			checkGolden(t, tc.golden, stdout)
		})
	}
}

func TestExplain(t *testing.T) {
	pods := `apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a}
  spec:
    containers: [{name: c, image: nginx}]
- apiVersion: v1
  kind: Pod
  metadata: {generateName: web-, namespace: lab}
  spec:
    runtimeClassName: runc-rc
    initContainers: [{name: i, image: quay.io/x/y}]
    containers: [{name: c, image: registry.example.com/app}]
- apiVersion: v1
  kind: Pod
  metadata: {name: broken, namespace: lab}
  spec:
    containers: [{name: c, image: "Not An Image"}]
`
	policy := `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, sandboxed: true}, {name: runc-rc}]
  rules:
  - {name: lab, runtimeClass: kata-rc, match: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: lab}}}}
`
	dir := t.TempDir()
	policyFile := filepath.Join(dir, "team.yaml")
	if err := os.WriteFile(policyFile, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run(t, pods, "policy", "explain", "--policy", policyFile, "-f", "-", "-o", "json")
	if code != ExitOK {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	want := []explainLine{
		{Pod: "default/a", Action: "none", Reason: "no rule matched and no policy sets a defaultRuntimeClass"},
		{Pod: "lab/web-*", RuntimeClass: "kata-rc", Rule: "team/lab", Action: "deny"},
		{Pod: "lab/broken", Action: "deny"},
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), stdout)
	}
	for i, l := range lines {
		var got explainLine
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatal(err)
		}
		reason := got.Reason
		got.Reason, want[i].Reason = "", ""
		if got != want[i] {
			t.Errorf("line %d = %+v, want %+v", i, got, want[i])
		}
		if reason == "" {
			t.Errorf("line %d has no reason", i)
		}
		if i == 1 && !strings.Contains(reason, "kubernetes.io/metadata.name=lab") {
			t.Errorf("reason %q does not say which namespace label matched", reason)
		}
		if i == 2 && !strings.Contains(reason, `spec.containers[0] (c): image "Not An Image" is not a valid reference`) {
			t.Errorf("reason %q does not name the bad image", reason)
		}
	}
}

func TestExplainUsage(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no arguments", nil, ExitUsage, "--policy is required"},
		{"no pods", []string{"--policy", examplePolicies}, ExitUsage, "-f is required"},
		{"bad output", []string{"--policy", examplePolicies, "-f", examplePods, "-o", "yaml"}, ExitUsage, `-o must be text or json, not "yaml"`},
		{"missing policy file", []string{"--policy", "nope.yaml", "-f", examplePods}, ExitUsage, "open nope.yaml: no such file or directory"},
		{"missing pods file", []string{"--policy", examplePolicies, "-f", "nope.yaml"}, ExitUsage, "open nope.yaml: no such file or directory"},
		{"positional argument", []string{"--policy", examplePolicies, "-f", examplePods, "extra"}, ExitUsage, `unknown command "extra"`},
		{"invalid policy", []string{"--policy", filepath.Join(validateData, "five-mistakes.yaml"), "-f", examplePods}, ExitFailure, "spec.rules[3].match: Required value"},
		{"not pods", []string{"--policy", examplePolicies, "-f", examplePolicies}, ExitFailure, `kind "ConfigMap" is not a Pod, Namespace or List`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(t, "", append([]string{"policy", "explain"}, tc.args...)...)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q does not contain %q", stderr, tc.stderr)
			}
			if code == ExitUsage && !strings.Contains(stderr, "Run 'isolator policy explain --help' for usage.") {
				t.Errorf("stderr %q has no usage hint", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout = %q, want nothing", stdout)
			}
		})
	}
}

func TestSchemaCommand(t *testing.T) {
	code, out, errOut := run(t, "", "policy", "schema")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	if out != string(policy.Schema) {
		t.Error("isolator policy schema does not print policy.Schema")
	}
	if !strings.Contains(out, `"$id": "`+policy.SchemaURL+`"`) {
		t.Errorf("the schema's $id is not %s", policy.SchemaURL)
	}
}
