package policy

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

const (
	// aTeam ranks kata-rc above gvisor-rc; bTeam ranks them the other way.
	aTeam = `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: kata-rc, sandboxed: true}
  - {name: gvisor-rc, sandboxed: true}
  - {name: runc-rc}
  defaultRuntimeClass: runc-rc
  rules:
  - name: shop
    runtimeClass: gvisor-rc
    match: {namespaces: [shop]}
  - name: same
    runtimeClass: kata-rc
    priority: 5
    match: {namespaces: [same]}
  - name: weak
    runtimeClass: runc-rc
    match: {namespaces: [web]}
`
	bTeam = `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: gvisor-rc, sandboxed: true}
  - {name: kata-rc, sandboxed: true}
  - {name: runc-rc}
  defaultRuntimeClass: kata-rc
  rules:
  - name: shop
    runtimeClass: kata-rc
    match: {namespaces: [shop]}
  - name: same
    runtimeClass: kata-rc
    priority: 5
    match: {namespaces: [same]}
  - name: audit-web
    runtimeClass: gvisor-rc
    mode: Audit
    match: {namespaces: [web]}
`
)

func TestMerge(t *testing.T) {
	a, b := src(t, "a-team", aTeam), src(t, "b-team", bTeam)
	for _, order := range [][]Source{{a, b}, {b, a}} {
		name := order[0].Name + "-first"
		t.Run(name, func(t *testing.T) {
			snap, err := Compile(order...)
			if err != nil {
				t.Fatal(err)
			}
			// The merged order follows the first source by name; both sandboxed classes
			// stay above runc-rc.
			wantClasses := []ClassInfo{{"kata-rc", IsolationVM, true}, {"gvisor-rc", IsolationVM, true}, {"runc-rc", IsolationContainer, false}}
			if got := snap.Classes(); !reflect.DeepEqual(got, wantClasses) {
				t.Errorf("Classes() = %v, want %v", got, wantClasses)
			}
			// Conflicting orders never weaken isolation: a pod naming either sandboxed
			// class is held to exactly the decided one.
			for class, want := range map[string][]string{
				"kata-rc":   {"kata-rc"},
				"gvisor-rc": {"gvisor-rc"},
				"runc-rc":   {"kata-rc", "gvisor-rc", "runc-rc"},
				"unknown":   nil,
			} {
				if got := snap.Accepted(class); !slices.Equal(got, want) {
					t.Errorf("Accepted(%s) = %v, want %v", class, got, want)
				}
			}
			if w := snap.Warnings(); len(w) != 1 || !strings.Contains(w[0], "b-team ranks gvisor-rc above kata-rc") {
				t.Errorf("Warnings() = %q, want one about b-team's order", w)
			}
			if got := snap.Sources(); !slices.Equal(got, []string{"a-team", "b-team"}) {
				t.Errorf("Sources() = %v", got)
			}
			if snap.Len() != 6 {
				t.Errorf("Len() = %d, want 6", snap.Len())
			}
			var qualified []string
			for _, r := range snap.Rules() {
				qualified = append(qualified, r.Qualified)
				if r.Qualified != r.Source+"/"+r.Rule.Name {
					t.Errorf("rule %s: source %s, name %s", r.Qualified, r.Source, r.Rule.Name)
				}
				if r.Audit != (r.Rule.Mode == ModeAudit) || r.Sandboxed != (r.Rule.RuntimeClass != "runc-rc") {
					t.Errorf("rule %s: audit %v, sandboxed %v", r.Qualified, r.Audit, r.Sandboxed)
				}
			}
			// Resolution order: priority, then the merged class order, then the name.
			wantRules := []string{"a-team/same", "b-team/same", "b-team/shop", "a-team/shop", "b-team/audit-web", "a-team/weak"}
			if !slices.Equal(qualified, wantRules) {
				t.Errorf("Rules() = %v, want %v", qualified, wantRules)
			}
			// The most isolated default wins, whoever sets it.
			if class, rule, ok := snap.Default(); class != "kata-rc" || rule != "b-team/defaultRuntimeClass" || !ok {
				t.Errorf("Default() = %q, %q, %v", class, rule, ok)
			}
			if c, ok := snap.Class("gvisor-rc"); !ok || c != (ClassInfo{"gvisor-rc", IsolationVM, true}) {
				t.Errorf("Class(gvisor-rc) = %v, %v", c, ok)
			}
			if _, ok := snap.Class("unknown"); ok {
				t.Error("Class(unknown) found")
			}
			runEval(t, snap, []evalCase{
				{name: "same-priority tie goes to the more isolated class", facts: facts(t, "shop", nil, nil, "nginx"),
					want: want{class: "kata-rc", rule: "b-team/shop", action: ActionSet, reason: []string{"namespace is shop"}}},
				{name: "exact tie goes to the first qualified name", facts: facts(t, "same", nil, nil, "nginx"),
					want: want{class: "kata-rc", rule: "a-team/same", action: ActionSet, reason: []string{"namespace is same"}}},
				{name: "other team's class ranked higher by it is not kept", facts: withClass(facts(t, "shop", nil, nil, "nginx"), "gvisor-rc"),
					want: want{class: "kata-rc", rule: "b-team/shop", action: ActionDeny, reason: []string{"gvisor-rc, which is less isolated", "name one of: kata-rc"}}},
				{name: "merged default", facts: facts(t, "elsewhere", nil, nil, "nginx"),
					want: want{class: "kata-rc", rule: "b-team/defaultRuntimeClass", action: ActionSet, reason: []string{"policy b-team sets defaultRuntimeClass kata-rc"}}},
				{name: "a rule beats the other team's default", facts: facts(t, "web", nil, nil, "nginx"),
					want:  want{class: "runc-rc", rule: "a-team/weak", action: ActionSet, reason: []string{"namespace is web"}},
					audit: want{class: "gvisor-rc", rule: "b-team/audit-web", action: ActionSet, reason: []string{"namespace is web"}}},
			})
		})
	}
}

func TestMergeSandboxDisagreement(t *testing.T) {
	one := header + "  - {name: gvisor-rc}\n  rules:\n  - {name: r, runtimeClass: gvisor-rc, match: {namespaces: [x]}}\n"
	other := `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: gvisor-rc, sandboxed: true}
  - {name: runc-rc}
`
	snap := compile(t, "one", one, "two", other)
	if c, _ := snap.Class("gvisor-rc"); !c.Sandboxed {
		t.Errorf("gvisor-rc is not sandboxed; a disagreement must resolve to sandboxed")
	}
	if w := snap.Warnings(); len(w) == 0 || !strings.Contains(w[0], "disagree on whether gvisor-rc is sandboxed") {
		t.Errorf("Warnings() = %q", w)
	}
	f := facts(t, "x", nil, nil, "nginx")
	f.HostNetwork = true
	checkOutcome(t, "decision", snap.Evaluate(&f).Outcome, want{class: "gvisor-rc", rule: "one/r", action: ActionDeny, reason: []string{"the pod uses hostNetwork"}})
	wantClasses := []ClassInfo{{"kata-rc", IsolationVM, true}, {"gvisor-rc", IsolationVM, true}, {"runc-rc", IsolationContainer, false}}
	if got := snap.Classes(); !reflect.DeepEqual(got, wantClasses) {
		t.Errorf("Classes() = %v, want %v", got, wantClasses)
	}
}

func TestMergeDefaults(t *testing.T) {
	runcDefault := header + "  defaultRuntimeClass: runc-rc\n"
	kataDefault := header + "  defaultRuntimeClass: kata-rc\n"
	cases := []struct {
		name      string
		nameDocs  []string
		wantClass string
		wantRule  string
	}{
		{"most isolated wins", []string{"a", runcDefault, "b", kataDefault}, "kata-rc", "b/defaultRuntimeClass"},
		{"most isolated wins regardless of name order", []string{"a", kataDefault, "b", runcDefault}, "kata-rc", "a/defaultRuntimeClass"},
		{"equal defaults: first name", []string{"b", runcDefault, "a", runcDefault}, "runc-rc", "a/defaultRuntimeClass"},
		{"a policy without a default changes nothing", []string{"a", header, "b", runcDefault}, "runc-rc", "b/defaultRuntimeClass"},
		{"no default anywhere", []string{"a", header, "b", header}, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap := compile(t, tc.nameDocs...)
			class, rule, ok := snap.Default()
			if class != tc.wantClass || rule != tc.wantRule || ok != (tc.wantClass != "") {
				t.Errorf("Default() = %q, %q, %v; want %q, %q", class, rule, ok, tc.wantClass, tc.wantRule)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	good := src(t, "team", header)
	bad := src(t, "broken", header+"  defaultRuntimeClass: kata\n")
	cases := []struct {
		name string
		srcs []Source
		want []string
	}{
		{"duplicate source names", []Source{good, {Name: "team", Origin: "other.yaml", Policy: good.Policy}},
			[]string{`team.yaml and other.yaml are both named "team"`, "metadata.name"}},
		{"invalid source", []Source{good, bad}, []string{"broken.yaml: spec.defaultRuntimeClass: Not found: \"kata\""}},
		{"nil policy", []Source{{Name: "x", Origin: "x.yaml"}}, []string{"x.yaml: no policy"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := Compile(tc.srcs...)
			if err == nil {
				t.Fatalf("Compile = %v, want an error", snap)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// No sources at all is an empty policy that leaves every pod alone.
	snap, err := Compile()
	if err != nil {
		t.Fatal(err)
	}
	f := facts(t, "x", nil, nil, "nginx")
	checkOutcome(t, "empty", snap.Evaluate(&f).Outcome, want{action: ActionNone, reason: []string{"no rule matched"}})
}

// TestCompileDeterministic compiles the same sources in every order and checks that
// everything the snapshot exposes, and every decision, is the same.
func TestCompileDeterministic(t *testing.T) {
	srcs := []Source{src(t, "a-team", aTeam), src(t, "b-team", bTeam), src(t, "c-team", header+"  defaultRuntimeClass: runc-rc\n  rules:\n  - {name: shop, runtimeClass: runc-rc, priority: 5, match: {namespaces: [same]}}\n")}
	probes := []Facts{
		facts(t, "shop", nil, nil, "nginx"), facts(t, "same", nil, nil, "nginx"), facts(t, "web", nil, nil, "nginx"),
		withClass(facts(t, "same", nil, nil, "nginx"), "runc-rc"), withClass(facts(t, "shop", nil, nil, "nginx"), "gvisor-rc"),
	}
	type view struct {
		Classes   []ClassInfo
		Rules     []RuleInfo
		Warnings  []string
		Sources   []string
		Default   [2]string
		Decisions []Decision
	}
	render := func(s *Snapshot) view {
		v := view{Classes: s.Classes(), Rules: s.Rules(), Warnings: s.Warnings(), Sources: s.Sources()}
		v.Default[0], v.Default[1], _ = s.Default()
		for i := range probes {
			v.Decisions = append(v.Decisions, s.Evaluate(&probes[i]))
		}
		return v
	}
	var first *view
	for _, perm := range [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
		in := []Source{srcs[perm[0]], srcs[perm[1]], srcs[perm[2]]}
		snap, err := Compile(in...)
		if err != nil {
			t.Fatal(err)
		}
		v := render(snap)
		if first == nil {
			first = &v
			continue
		}
		if !reflect.DeepEqual(v, *first) {
			t.Errorf("order %v gives\n%+v\nwant\n%+v", perm, v, *first)
		}
	}
}
