package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes through everything a policy ConfigMap goes through:
// ReadSources, Parse, Validate and Compile. None may panic, and a policy that
// validates must compile: the webhook's validator and its store must never disagree.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{filepath.Join("testdata", "validate"), filepath.Join("..", "manifests", "examples")} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
		for _, file := range files {
			if data, err := os.ReadFile(file); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte(header + "  rules:\n  - {name: r, runtimeClass: kata-rc, match: {anyImage: ['**/x/**/y:*@sha256:" + zeros + "']}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		srcs, _ := ReadSources("fuzz.yaml", bytes.NewReader(data))
		for _, s := range srcs {
			if errs := Validate(s.Policy, s.Root); len(errs) == 0 {
				if _, err := Compile(s); err != nil {
					t.Fatalf("a valid policy does not compile: %v", err)
				}
			}
		}
		p, errs := Parse(data, nil)
		if len(errs) > 0 {
			if p != nil {
				t.Fatalf("Parse returned a policy with errors %v", errs)
			}
			return
		}
		if errs := Validate(p, nil); len(errs) > 0 {
			if _, err := Compile(Source{Name: "fuzz", Origin: "fuzz.yaml", Policy: p}); err == nil {
				t.Fatalf("an invalid policy compiles: %v", errs)
			}
			return
		}
		snap, err := Compile(Source{Name: "fuzz", Origin: "fuzz.yaml", Policy: p})
		if err != nil {
			t.Fatalf("a valid policy does not compile: %v", err)
		}
		img, _ := NormalizeImage("nginx")
		for _, fa := range []Facts{
			{Namespace: "default", Images: []Image{img}},
			{Namespace: "tenant-a", NamespaceLabels: map[string]string{"isolator.dev/trust": "untrusted"}, RuntimeClassName: "runc-rc", HostNetwork: true, Images: []Image{img, img}},
		} {
			checkDecision(t, snap, &fa)
		}
	})
}

// fuzzPolicies is the merged policy FuzzEvaluate decides with: the examples plus rules
// that exercise every matcher, with both Deny and Replace and an audit rule.
const fuzzPolicy = `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: kata-rc, sandboxed: true}
  - {name: gvisor-rc, sandboxed: true}
  - {name: runc-rc}
  - {name: host-rc}
  defaultRuntimeClass: host-rc
  rules:
  - {name: lit, runtimeClass: gvisor-rc, priority: 3, match: {namespaces: [a, ab, abc]}}
  - {name: glob, runtimeClass: kata-rc, userRuntimeClass: Replace, match: {namespaces: ["a*", "?b", "[a-c]c*"]}}
  - {name: nsl, runtimeClass: runc-rc, priority: 3, match: {namespaceSelector: {matchLabels: {a: b}}}}
  - {name: nse, runtimeClass: kata-rc, match: {namespaceSelector: {matchExpressions: [{key: a, operator: NotIn, values: [b, c]}, {key: b, operator: Exists}]}}}
  - {name: pod, runtimeClass: gvisor-rc, priority: -1, match: {podSelector: {matchExpressions: [{key: a, operator: In, values: [a, b, c]}]}}}
  - {name: podx, runtimeClass: runc-rc, match: {podSelector: {matchExpressions: [{key: b, operator: DoesNotExist}]}, namespaces: ["*"]}}
  - {name: any, runtimeClass: kata-rc, priority: 2, match: {anyImage: ["docker.io/**", "quay.io/*/a:*", "**/b@sha256:` + zeros + `"]}}
  - {name: all, runtimeClass: runc-rc, priority: 2, match: {allImages: ["localhost:5000/**", "a.b/**/c/**"]}}
  - {name: mixed, runtimeClass: kata-rc, priority: 1, userRuntimeClass: Replace, match: {namespaces: ["b*"], anyImage: ["**"], podSelector: {matchLabels: {c: d}}}}
  - {name: ports, runtimeClass: gvisor-rc, priority: 2, match: {anyImage: ["quay.io:443/u/**", "ghcr.io:0443/u/**", "localhost:05000/p/**", "*.io:*/w/*", "\\[::1\\]:5000/**"]}}
  - {name: audit, runtimeClass: kata-rc, mode: Audit, match: {anyImage: ["**/a"]}}
  - {name: audit2, runtimeClass: runc-rc, mode: Audit, priority: 9, match: {namespaces: ["a?"]}}
`

// fuzzTiers is a v1alpha2 policy: isolation tiers, classes of one tier, unknown
// classes counted as Container, and exclusions.
const fuzzTiers = `apiVersion: isolator.dev/v1alpha2
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: kata-rc, isolation: VM}
  - {name: kata-clh, isolation: VM}
  - {name: gvisor-rc, isolation: Kernel}
  - {name: runc-rc, isolation: Container}
  - {name: host-rc, isolation: Container}
  defaultRuntimeClass: runc-rc
  rules:
  - {name: glob, runtimeClass: kata-rc, match: {namespaces: ["a*"]}, exclude: [{namespaces: [ab]}, {podSelector: {matchLabels: {a: b}}}]}
  - {name: k, runtimeClass: gvisor-rc, priority: 1, match: {anyImage: ["docker.io/**"]}, exclude: [{serviceAccountNames: [default], namespaces: ["b*"]}]}
  - {name: clh, runtimeClass: kata-clh, priority: -1, userRuntimeClass: Replace, match: {namespaceSelector: {matchLabels: {a: b}}}}
`

// fuzzTeam is the team policy of namespace a.
const fuzzTeam = `apiVersion: isolator.dev/v1alpha2
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, isolation: VM}, {name: runc-rc, isolation: Container}, {name: gvisor-rc, isolation: Kernel}]
  defaultRuntimeClass: gvisor-rc
  rules:
  - {name: quay, runtimeClass: kata-rc, match: {anyImage: ["quay.io/**"]}}
  - {name: loose, runtimeClass: runc-rc, priority: 5, match: {podSelector: {matchLabels: {b: x}}}}
  - {name: audit, runtimeClass: kata-rc, mode: Audit, match: {anyImage: ["**"]}}
`

// FuzzEvaluate decides random pods against a fixed policy. Evaluate must not panic and
// every Decision must keep the promises of ARCHITECTURE.md: the index finds exactly
// the rule a linear scan finds, a sandboxed class never goes to a pod with host
// namespaces, and a kept class is never less isolated than the decided one.
func FuzzEvaluate(f *testing.F) {
	f.Add("a", "a", "b", "a", "b", "nginx", "quay.io/x/a:1", "weird//name", "", false, false, false)
	f.Add("abc", "b", "x", "c", "d", "localhost:5000/x", "a.b/c/d", "a.b/q/c", "runc-rc", true, false, false)
	f.Add("bz", "a", "c", "a", "z", "registry-1.docker.io:443/library/nginx", "x/b@sha256:"+zeros, "", "kata-rc", false, true, true)
	f.Add("ab", "", "", "", "", "", "", "/", "gvisor", false, false, true)
	f.Add("cc", "b", "", "b", "", "Docker.IO/a", "index.docker.io/a/b", "**", "host-rc", true, true, true)
	// Ports in their spellings: a number, and 443 the default.
	f.Add("x", "", "", "", "", "quay.io:0443/u/x", "ghcr.io:443/u/a", "quay.io:443/u/x", "", false, false, false)
	f.Add("x", "", "", "", "", "localhost:005000/p/a", "QUAY.IO:00443/w/a", "[::1]:05000/a", "runc-rc", false, false, false)
	f.Add("x", "", "", "", "", "docker.io:0443/evil/x", "registry.hub.docker.com/a", "localhost:5000/p/x", "", false, false, false)
	snaps := fuzzSnapshots(f)
	f.Fuzz(func(t *testing.T, ns, nsKey, nsVal, podKey, podVal, img1, img2, raw, class string, hostNet, hostPID, hostIPC bool) {
		fa := Facts{
			Namespace:        ns,
			NamespaceLabels:  map[string]string{"kubernetes.io/metadata.name": ns, nsKey: nsVal, "b": nsVal},
			PodLabels:        map[string]string{podKey: podVal},
			RuntimeClassName: class,
			HostNetwork:      hostNet, HostPID: hostPID, HostIPC: hostIPC,
		}
		for _, ref := range []string{img1, img2} {
			if img, err := NormalizeImage(ref); err == nil {
				fa.Images = append(fa.Images, img)
			}
		}
		// Facts come from callers; a name that no reference produces must not crash.
		fa.Images = append(fa.Images, Image{Name: raw, Tag: podVal, Digest: nsVal})
		for _, snap := range snaps {
			checkDecision(t, snap, &fa)
			noImages := fa
			noImages.Images = nil
			checkDecision(t, snap, &noImages)
		}
	})
}

func fuzzSnapshots(tb testing.TB) []*Snapshot {
	data, err := os.ReadFile(filepath.Join("..", "manifests", "examples", "policies.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	examples, derrs := ReadSources("policies.yaml", bytes.NewReader(data))
	if len(derrs) > 0 {
		tb.Fatal(derrs[0])
	}
	fuzz := src(tb, "fuzz", fuzzPolicy)
	tiers := src(tb, "tiers", fuzzTiers)
	team := src(tb, "team", fuzzTeam)
	team.Namespace = "a"
	team.AsTeam("isolator-system")
	var out []*Snapshot
	for _, srcs := range [][]Source{{fuzz}, examples, append(slices.Clone(examples), fuzz), {tiers, team}, {tiers, team, fuzz}} {
		s, err := Compile(srcs...)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// checkDecision evaluates f and checks every invariant a Decision must hold.
func checkDecision(t *testing.T, s *Snapshot, f *Facts) {
	t.Helper()
	d := s.Evaluate(f)
	if again := s.Evaluate(f); again != d {
		t.Fatalf("Evaluate is not deterministic: %+v then %+v", d, again)
	}
	enforce, audit := scan(s, f)
	checkOutcomeInvariants(t, s, f, d.Outcome, enforce, "decision")
	if audit != nil {
		checkOutcomeInvariants(t, s, f, d.Audit, audit, "audit")
	} else if d.Audit != (Outcome{}) {
		t.Fatalf("audit outcome %+v without a matching audit rule", d.Audit)
	}
}

// scan is the reference Evaluate: the first matching rule in resolution order, by
// looking at every rule. The index must agree with it.
func scan(s *Snapshot, f *Facts) (enforce, audit *compiledRule) {
	for i := range s.rules {
		r := &s.rules[i]
		if !r.matches(f) {
			continue
		}
		if r.audit && audit == nil {
			audit = r
		}
		if !r.audit && enforce == nil {
			enforce = r
		}
	}
	if enforce == nil {
		enforce = s.def
	}
	// The pod's namespace's team policy decides where it is more isolated.
	if t := s.teams[f.Namespace]; t != nil {
		var team, teamAudit *compiledRule
		for i := range t.rules {
			r := &t.rules[i]
			switch {
			case !r.matches(f):
			case r.audit && teamAudit == nil:
				teamAudit = r
			case !r.audit && team == nil:
				team = r
			}
		}
		if team == nil {
			team = t.def
		}
		if team != nil && s.tighter(team.class, enforce) {
			enforce = team
		}
		if audit == nil {
			audit = teamAudit
		}
	}
	return enforce, audit
}

func checkOutcomeInvariants(t *testing.T, s *Snapshot, f *Facts, o Outcome, rule *compiledRule, what string) {
	t.Helper()
	hostNS := f.HostNetwork || f.HostPID || f.HostIPC
	if rule == nil {
		if o.Action != ActionNone || o.Rule != "" || o.RuntimeClass != f.RuntimeClassName || o.Reason == "" {
			t.Fatalf("%s: no rule applies, got %+v", what, o)
		}
		return
	}
	if o.Rule != rule.qualified {
		t.Fatalf("%s: rule %q, but a scan of every rule finds %q", what, o.Rule, rule.qualified)
	}
	if o.Reason == "" {
		t.Fatalf("%s: no reason: %+v", what, o)
	}
	decided := s.classes[rule.class]
	cls, known := s.Class(o.RuntimeClass)
	if !known {
		// Only a pod's own class that no policy lists, kept where unknown classes pass.
		if o.Action != ActionKeep || o.RuntimeClass != f.RuntimeClassName || !s.unknownKeep[rule.class] {
			t.Fatalf("%s: class %q is not in the policy: %+v", what, o.RuntimeClass, o)
		}
		return
	}
	if o.Action != ActionDeny && cls.VM() && hostNS {
		t.Fatalf("%s: sandboxed %s admitted (%s) for a pod with host namespaces", what, cls.Name, o.Action)
	}
	switch o.Action {
	case ActionSet:
		if f.RuntimeClassName != "" || o.RuntimeClass != decided.Name {
			t.Fatalf("%s: set %s, decided %s, pod names %q", what, o.RuntimeClass, decided.Name, f.RuntimeClassName)
		}
	case ActionKeep:
		if o.RuntimeClass != f.RuntimeClassName || !s.keepOK[s.classIdx[o.RuntimeClass]][rule.class] || !slices.Contains(s.Accepted(decided.Name), o.RuntimeClass) {
			t.Fatalf("%s: kept %s (pod names %q), less isolated than the decided %s", what, o.RuntimeClass, f.RuntimeClassName, decided.Name)
		}
	case ActionReplace:
		if !rule.replace || o.RuntimeClass != decided.Name || f.RuntimeClassName == "" || slices.Contains(s.Accepted(decided.Name), f.RuntimeClassName) {
			t.Fatalf("%s: replaced %q with %s under %s", what, f.RuntimeClassName, o.RuntimeClass, rule.qualified)
		}
	case ActionDeny:
		ownOK := f.RuntimeClassName == "" || slices.Contains(s.Accepted(decided.Name), f.RuntimeClassName)
		if ownOK || rule.replace {
			// Only host namespaces deny a pod whose own class is acceptable (or would
			// be replaced).
			if !hostNS || !cls.VM() || !strings.Contains(o.Reason, "the pod uses") {
				t.Fatalf("%s: denied %+v for pod class %q under %s", what, o, f.RuntimeClassName, rule.qualified)
			}
		} else if o.RuntimeClass != decided.Name {
			t.Fatalf("%s: denial names %s, decided %s", what, o.RuntimeClass, decided.Name)
		}
	default:
		t.Fatalf("%s: action %q for rule %s", what, o.Action, rule.qualified)
	}
}

// TestIndexMatchesScan checks the index against a scan of every rule over the
// benchmark's 1,000-rule policy, for pods built from the keys that policy uses.
func TestIndexMatchesScan(t *testing.T) {
	snap, err := Compile(benchSource(1000))
	if err != nil {
		t.Fatal(err)
	}
	nss := []string{"team-3", "team-3-dev", "team-33", "tenant-6-x", "tenant-66-", "payments", "team-", ""}
	nsLabels := []map[string]string{nil, {"team": "t10"}, {"cost-center": "cc-12", "env": "prod"}, {"env": "prod", "team": "t30"}}
	podLabels := []map[string]string{nil, {"app": "app-13"}, {"isolator.dev/profile-15": ""}, {"app": "web", "isolator.dev/profile-35": "x"}}
	imgs := [][]Image{nil,
		images(t, "registry.example.com/team-16/web"),
		images(t, "quay.io/org-18/a", "registry.example.com/base/x/y"),
		images(t, "docker.io/library/app-19:1", "quay.io/org-38/b"),
		images(t, "registry.example.com/base/os", "quay.io/org-18/a"),
	}
	n, rules := 0, map[string]bool{}
	for _, ns := range nss {
		for _, nl := range nsLabels {
			for _, pl := range podLabels {
				for _, im := range imgs {
					for _, class := range []string{"", "runc-rc", "kata-rc"} {
						f := Facts{Namespace: ns, NamespaceLabels: nl, PodLabels: pl, Images: im, RuntimeClassName: class}
						checkDecision(t, snap, &f)
						rules[snap.Evaluate(&f).Rule] = true
						n++
					}
				}
			}
		}
	}
	// The pods must reach rules of every kind, not just the default.
	if len(rules) < 12 {
		t.Errorf("the pods reach only %d distinct rules: %v", len(rules), rules)
	}
	t.Logf("%d pods agree with a scan of every rule; they reach %d rules", n, len(rules))
}

// FuzzImageMatch checks the image matcher against its definition. A canonical
// reference, used as a pattern, matches itself; ImagePattern matches exactly as the
// compiled pattern does; and the linear "**" matcher agrees with a plain recursive one
// on any name whose segments are not empty.
func FuzzImageMatch(f *testing.F) {
	f.Add("nginx", "docker.io/**", "a/b/c")
	f.Add("quay.io/a/b/c:v1@sha256:"+zeros, "quay.io/**/c:v*", "x/y")
	f.Add("localhost:5000/x", "**/x/**", "x/x/x/x")
	f.Add("registry-1.docker.io:443/library/nginx", "**/**/nginx", "a/nginx")
	f.Add("a.b/c/d/e", "a.b/*/**/e", "c/d/e/e")
	f.Add("quay.io:0443/untrusted/x", "quay.io:443/untrusted/**", "untrusted/x")
	f.Add("localhost:05000/a", "localhost:5000/*", "a")
	f.Add("[::1]:0443/a", `\[::1\]:*/**`, "a")
	f.Add("registry.hub.docker.com:443/a/b", "**/quay*/b", "a/b")
	f.Fuzz(func(t *testing.T, ref, pattern, name string) {
		if img, err := NormalizeImage(ref); err == nil {
			if again, err := NormalizeImage(img.String()); err == nil && again == img && !strings.Contains(img.Name, "[") {
				self, err := compileImagePattern(img.String())
				if err != nil {
					t.Fatalf("canonical reference %q is not a valid pattern: %v", img, err)
				}
				if !self.matches(&img) {
					t.Fatalf("canonical reference %q does not match itself (as %q)", img, self.String())
				}
			}
			if p, err := compileImagePattern(pattern); err == nil {
				exported, err := ParseImagePattern(pattern)
				if err != nil {
					t.Fatalf("ParseImagePattern(%q): %v", pattern, err)
				}
				if got, want := exported.Matches(img), p.matches(&img); got != want {
					t.Fatalf("ImagePattern(%q).Matches(%s) = %v, compiled pattern says %v", pattern, img, got, want)
				}
			}
		}
		p, err := compileImagePattern(pattern)
		if err != nil {
			return
		}
		parts := strings.Split(name, "/")
		if len(parts) > 10 || len(p.segs) > 10 || slices.Contains(parts, "") {
			return // the recursive matcher is exponential; names have no empty segments
		}
		if got, want := matchSegments(p.segs, name), naiveMatch(p.segs, parts); got != want {
			t.Fatalf("matchSegments(%q, %q) = %v, want %v", p.String(), name, got, want)
		}
	})
}

// naiveMatch is the definition of segment matching: "**" takes any number of whole
// segments, every other glob exactly one (path.Match, no shortcuts).
func naiveMatch(segs []glob, name []string) bool {
	if len(segs) == 0 {
		return len(name) == 0
	}
	if segs[0].any {
		for i := 0; i <= len(name); i++ {
			if naiveMatch(segs[1:], name[i:]) {
				return true
			}
		}
		return false
	}
	return len(name) > 0 && globMatch(segs[0].pattern, name[0]) && naiveMatch(segs[1:], name[1:])
}

// TestIndexMatchesScanHostPorts: every spelling of a registry's port reaches the rules
// filed under that registry. The index files a rule under its pattern's literal
// leading segments and looks up the canonical image name, so both must write the host
// the same way: the default port left out, other ports as numbers.
func TestIndexMatchesScanHostPorts(t *testing.T) {
	hosts := []string{"quay.io", "quay.io:443", "quay.io:0443", "QUAY.IO:00443", "ghcr.io:443", "ghcr.io",
		"localhost:5000", "localhost:05000", "docker.io:0443", "registry.example.com:443", "[::1]:5000", "[::1]:0443"}
	paths := []string{"untrusted/x", "untrusted/a/b:1", "other/x"}
	var patterns []string
	for _, h := range hosts {
		if strings.HasPrefix(h, "[") {
			h = `\` + strings.Replace(h, "]", `\]`, 1)
		}
		patterns = append(patterns, h+"/untrusted/**", h+"/**", h+"/*/x")
	}
	patterns = append(patterns, "**/untrusted/**", "*.io:443/untrusted/**", "quay.io:*/untrusted/**")
	pairs, matched := 0, 0
	for _, pattern := range patterns {
		doc := `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, sandboxed: true}, {name: runc-rc}]
  defaultRuntimeClass: runc-rc
  rules:
  - {name: any, runtimeClass: kata-rc, match: {anyImage: ["` + strings.ReplaceAll(pattern, `\`, `\\`) + `"]}}
  - {name: all, runtimeClass: kata-rc, priority: -1, match: {allImages: ["` + strings.ReplaceAll(pattern, `\`, `\\`) + `"]}}
`
		snap := compile(t, "ports", doc)
		p, err := compileImagePattern(pattern)
		if err != nil {
			t.Fatalf("pattern %q: %v", pattern, err)
		}
		for _, h := range hosts {
			for _, path := range paths {
				img := images(t, h+"/"+path)
				f := Facts{Namespace: "ns", Images: img}
				checkDecision(t, snap, &f)
				d := snap.Evaluate(&f)
				want := p.matches(&img[0])
				if got := d.Rule == "ports/any"; got != want {
					t.Errorf("pattern %q, image %q: decided by %s, want the rule to match: %v", pattern, h+"/"+path, d.Rule, want)
				}
				pairs++
				if want {
					matched++
				}
			}
		}
	}
	if matched < pairs/8 {
		t.Errorf("only %d of %d pattern and image pairs match: the spellings drifted apart", matched, pairs)
	}
	t.Logf("%d pattern and image pairs, %d matching, index and scan agree", pairs, matched)
}
