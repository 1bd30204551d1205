package policy

import (
	"strings"
	"testing"
)

// header starts every test policy: kata-rc (sandboxed) above runc-rc.
const header = `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: kata-rc, sandboxed: true}
  - {name: runc-rc}
`

// src parses one bare policy document named name; it fails the test on any error.
func src(t testing.TB, name, doc string) Source {
	t.Helper()
	p, errs := Parse([]byte(doc), nil)
	if len(errs) > 0 {
		t.Fatalf("parse %s: %v\n%s", name, errs.ToAggregate(), doc)
	}
	return Source{Name: name, Origin: name + ".yaml", Policy: p}
}

// compile compiles named policy documents given as name, doc, name, doc, ...
func compile(t testing.TB, nameDocs ...string) *Snapshot {
	t.Helper()
	var srcs []Source
	for i := 0; i+1 < len(nameDocs); i += 2 {
		srcs = append(srcs, src(t, nameDocs[i], nameDocs[i+1]))
	}
	s, err := Compile(srcs...)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return s
}

// images normalises image references for Facts.
func images(t testing.TB, refs ...string) []Image {
	t.Helper()
	out := make([]Image, 0, len(refs))
	for _, r := range refs {
		img, err := NormalizeImage(r)
		if err != nil {
			t.Fatalf("image %q: %v", r, err)
		}
		out = append(out, img)
	}
	return out
}

// want is an expected Outcome; reason holds substrings the Reason must contain (the
// reason is prose, so tests pin its facts rather than its wording).
type want struct {
	class, rule string
	action      Action
	reason      []string
}

// checkOutcome compares every field of an Outcome with w.
func checkOutcome(t testing.TB, what string, got Outcome, w want) {
	t.Helper()
	if got.RuntimeClass != w.class || got.Rule != w.rule || got.Action != w.action {
		t.Errorf("%s = {class %q, rule %q, action %q}, want {class %q, rule %q, action %q}\nreason: %s",
			what, got.RuntimeClass, got.Rule, got.Action, w.class, w.rule, w.action, got.Reason)
	}
	if w.action == "" {
		if got.Reason != "" {
			t.Errorf("%s reason = %q, want none", what, got.Reason)
		}
		return
	}
	if got.Reason == "" {
		t.Errorf("%s has no reason", what)
	}
	for _, sub := range w.reason {
		if !strings.Contains(got.Reason, sub) {
			t.Errorf("%s reason %q does not contain %q", what, got.Reason, sub)
		}
	}
}
