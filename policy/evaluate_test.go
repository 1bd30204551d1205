package policy

import (
	"testing"
)

type evalCase struct {
	name  string
	facts Facts
	want  want
	audit want // zero: no audit rule matched
}

// runEval evaluates every case against snap and checks the whole Decision.
func runEval(t *testing.T, snap *Snapshot, cases []evalCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := snap.Evaluate(&tc.facts)
			checkOutcome(t, "decision", d.Outcome, tc.want)
			checkOutcome(t, "audit", d.Audit, tc.audit)
		})
	}
}

func ns(name string, labels map[string]string) (string, map[string]string) {
	l := map[string]string{"kubernetes.io/metadata.name": name}
	for k, v := range labels {
		l[k] = v
	}
	return name, l
}

// facts builds the facts of a pod in namespace name (with its labels) running images.
func facts(t *testing.T, name string, nsLabels, podLabels map[string]string, refs ...string) Facts {
	n, l := ns(name, nsLabels)
	return Facts{Namespace: n, NamespaceLabels: l, PodLabels: podLabels, Images: images(t, refs...)}
}

func withClass(f Facts, class string) Facts { f.RuntimeClassName = class; return f }

func defaultTo(policy string) want {
	return want{class: "runc-rc", rule: policy + "/defaultRuntimeClass", action: ActionSet,
		reason: []string{"no rule matched", "policy " + policy + " sets defaultRuntimeClass runc-rc"}}
}

func TestEvaluateNamespaces(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: shop
    runtimeClass: kata-rc
    match: {namespaces: [shop]}
  - name: tenants
    runtimeClass: kata-rc
    match: {namespaces: ["tenant-*", "team-?", "lab-[ab]"]}
`)
	tenants := want{class: "kata-rc", rule: "p/tenants", action: ActionSet, reason: []string{"namespace matches one of [tenant-*, team-?, lab-[ab]]"}}
	runEval(t, snap, []evalCase{
		{name: "literal name", facts: facts(t, "shop", nil, nil, "nginx"),
			want: want{class: "kata-rc", rule: "p/shop", action: ActionSet, reason: []string{"namespace is shop"}}},
		{name: "literal is not a prefix", facts: facts(t, "shop2", nil, nil, "nginx"), want: defaultTo("p")},
		{name: "star glob", facts: facts(t, "tenant-acme", nil, nil, "nginx"), want: tenants},
		{name: "star needs the dash", facts: facts(t, "tenant", nil, nil, "nginx"), want: defaultTo("p")},
		{name: "question mark is one character", facts: facts(t, "team-x", nil, nil, "nginx"), want: tenants},
		{name: "question mark is not two", facts: facts(t, "team-xy", nil, nil, "nginx"), want: defaultTo("p")},
		{name: "character class", facts: facts(t, "lab-b", nil, nil, "nginx"), want: tenants},
		{name: "outside the character class", facts: facts(t, "lab-c", nil, nil, "nginx"), want: defaultTo("p")},
		{name: "globs are anchored", facts: facts(t, "x-tenant-a", nil, nil, "nginx"), want: defaultTo("p")},
	})
}

func TestEvaluateNamespaceSelector(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: untrusted
    runtimeClass: kata-rc
    match:
      namespaceSelector: {matchLabels: {isolator.dev/trust: untrusted}}
  - name: not-trusted-tier
    runtimeClass: kata-rc
    match:
      namespaceSelector:
        matchExpressions:
        - {key: tier, operator: NotIn, values: [trusted, system]}
        - {key: tier, operator: Exists}
  - name: by-name
    runtimeClass: kata-rc
    match:
      namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: sandbox}}
`)
	runEval(t, snap, []evalCase{
		{name: "matchLabels", facts: facts(t, "shop", map[string]string{"isolator.dev/trust": "untrusted"}, nil, "nginx"),
			want: want{class: "kata-rc", rule: "p/untrusted", action: ActionSet, reason: []string{"namespace labels match {isolator.dev/trust=untrusted}"}}},
		{name: "matchLabels other value", facts: facts(t, "shop", map[string]string{"isolator.dev/trust": "trusted"}, nil, "nginx"), want: defaultTo("p")},
		{name: "NotIn with Exists", facts: facts(t, "lab", map[string]string{"tier": "experimental"}, nil, "nginx"),
			want: want{class: "kata-rc", rule: "p/not-trusted-tier", action: ActionSet, reason: []string{"tier notin (system,trusted)", "tier"}}},
		{name: "NotIn excluded value", facts: facts(t, "lab", map[string]string{"tier": "system"}, nil, "nginx"), want: defaultTo("p")},
		{name: "Exists fails without the key", facts: facts(t, "lab", nil, nil, "nginx"), want: defaultTo("p")},
		{name: "namespace name label", facts: facts(t, "sandbox", nil, nil, "nginx"),
			want: want{class: "kata-rc", rule: "p/by-name", action: ActionSet, reason: []string{"kubernetes.io/metadata.name=sandbox"}}},
		{name: "pod labels are not namespace labels", facts: facts(t, "shop", nil, map[string]string{"isolator.dev/trust": "untrusted"}, "nginx"), want: defaultTo("p")},
	})
}

func TestEvaluatePodSelector(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: ci
    runtimeClass: kata-rc
    match:
      podSelector: {matchExpressions: [{key: app, operator: In, values: [ci-runner, build-agent]}]}
  - name: untrusted-label
    runtimeClass: kata-rc
    match:
      podSelector: {matchExpressions: [{key: isolator.dev/untrusted, operator: Exists}]}
  - name: unlabelled-in-lab
    runtimeClass: kata-rc
    match:
      namespaces: [lab]
      podSelector: {matchExpressions: [{key: owner, operator: DoesNotExist}]}
`)
	runEval(t, snap, []evalCase{
		{name: "In first value", facts: facts(t, "ci", nil, map[string]string{"app": "ci-runner"}, "nginx"),
			want: want{class: "kata-rc", rule: "p/ci", action: ActionSet, reason: []string{"pod labels match {app in (build-agent,ci-runner)}"}}},
		{name: "In second value", facts: facts(t, "ci", nil, map[string]string{"app": "build-agent", "x": "y"}, "nginx"),
			want: want{class: "kata-rc", rule: "p/ci", action: ActionSet, reason: []string{"app in"}}},
		{name: "In other value", facts: facts(t, "ci", nil, map[string]string{"app": "web"}, "nginx"), want: defaultTo("p")},
		{name: "Exists with empty value", facts: facts(t, "ci", nil, map[string]string{"isolator.dev/untrusted": ""}, "nginx"),
			want: want{class: "kata-rc", rule: "p/untrusted-label", action: ActionSet, reason: []string{"pod labels match {isolator.dev/untrusted}"}}},
		{name: "DoesNotExist holds", facts: facts(t, "lab", nil, map[string]string{"app": "x"}, "nginx"),
			want: want{class: "kata-rc", rule: "p/unlabelled-in-lab", action: ActionSet, reason: []string{"namespace is lab", "!owner"}}},
		{name: "DoesNotExist fails", facts: facts(t, "lab", nil, map[string]string{"owner": "me"}, "nginx"), want: defaultTo("p")},
		{name: "no labels at all", facts: facts(t, "ci", nil, nil, "nginx"), want: defaultTo("p")},
	})
}

func TestEvaluateImages(t *testing.T) {
	snap := compile(t, "p", header+`  rules:
  - name: hub
    runtimeClass: kata-rc
    match: {anyImage: ["docker.io/**"]}
  - name: platform
    runtimeClass: runc-rc
    priority: 10
    match: {allImages: ["registry.example.com/platform/**", "registry.example.com/base/*:v*"]}
`)
	hub := want{class: "kata-rc", rule: "p/hub", action: ActionSet, reason: []string{"an image matches docker.io/**"}}
	platform := want{class: "runc-rc", rule: "p/platform", action: ActionSet,
		reason: []string{"every image matches one of [registry.example.com/platform/**, registry.example.com/base/*:v*]"}}
	none := want{action: ActionNone, reason: []string{"no rule matched and no policy sets a defaultRuntimeClass"}}
	withInit := facts(t, "x", nil, nil, "registry.example.com/platform/app:1", "registry.example.com/platform/sidecar:2")
	withInit.Images = append(images(t, "busybox"), withInit.Images...) // initContainers come first in Pod.Facts
	runEval(t, snap, []evalCase{
		{name: "anyImage: one of three containers", facts: facts(t, "x", nil, nil, "quay.io/a/b", "nginx:1.25", "registry.example.com/y"), want: hub},
		{name: "anyImage: official image by short name", facts: facts(t, "x", nil, nil, "redis"), want: hub},
		{name: "anyImage: none matches", facts: facts(t, "x", nil, nil, "quay.io/a/b", "ghcr.io/c/d"), want: none},
		{name: "allImages: every container", facts: facts(t, "x", nil, nil, "registry.example.com/platform/app:1", "registry.example.com/platform/team/sidecar@sha256:"+zeros, "registry.example.com/base/os:v3"), want: platform},
		{name: "allImages: tag pattern fails", facts: facts(t, "x", nil, nil, "registry.example.com/platform/app:1", "registry.example.com/base/os:3"), want: none},
		{name: "allImages: one foreign container", facts: facts(t, "x", nil, nil, "registry.example.com/platform/app:1", "quay.io/a/b"), want: none},
		{name: "allImages: an initContainer counts", facts: withInit, want: hub},
		{name: "allImages: no images proves nothing", facts: facts(t, "x", nil, nil), want: none},
		{name: "allImages beats anyImage by priority", facts: facts(t, "x", nil, nil, "registry.example.com/platform/app:1"), want: platform},
	})
}

func TestEvaluateAndOfFields(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: all-fields
    runtimeClass: kata-rc
    match:
      namespaces: ["tenant-*"]
      namespaceSelector: {matchLabels: {tier: web}}
      podSelector: {matchLabels: {app: shop}}
      anyImage: ["docker.io/**"]
      allImages: ["docker.io/library/*", "quay.io/**"]
`)
	nsl := map[string]string{"tier": "web"}
	pl := map[string]string{"app": "shop"}
	runEval(t, snap, []evalCase{
		{name: "every field holds", facts: facts(t, "tenant-a", nsl, pl, "nginx", "quay.io/x/y"),
			want: want{class: "kata-rc", rule: "p/all-fields", action: ActionSet, reason: []string{
				"namespace matches tenant-*", "namespace labels match {tier=web}", "pod labels match {app=shop}",
				"an image matches docker.io/**", "every image matches one of [docker.io/library/*, quay.io/**]"}}},
		{name: "namespace fails", facts: facts(t, "shop", nsl, pl, "nginx", "quay.io/x/y"), want: defaultTo("p")},
		{name: "namespace labels fail", facts: facts(t, "tenant-a", nil, pl, "nginx", "quay.io/x/y"), want: defaultTo("p")},
		{name: "pod labels fail", facts: facts(t, "tenant-a", nsl, nil, "nginx", "quay.io/x/y"), want: defaultTo("p")},
		{name: "anyImage fails", facts: facts(t, "tenant-a", nsl, pl, "quay.io/x/y"), want: defaultTo("p")},
		{name: "allImages fails", facts: facts(t, "tenant-a", nsl, pl, "nginx", "gcr.io/x/y"), want: defaultTo("p")},
	})
}

func TestEvaluateResolution(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: a-runc-high
    runtimeClass: runc-rc
    priority: 100
    match: {namespaces: [prio]}
  - name: z-kata-low
    runtimeClass: kata-rc
    priority: 50
    match: {namespaces: [prio, negative]}
  - name: a-runc-negative
    runtimeClass: runc-rc
    priority: -5
    match: {namespaces: [negative]}
  - name: a-runc-tie
    runtimeClass: runc-rc
    priority: 7
    match: {namespaces: [tie]}
  - name: z-kata-tie
    runtimeClass: kata-rc
    priority: 7
    match: {namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: tie}}}
  - name: b-kata-name
    runtimeClass: kata-rc
    match: {namespaces: [name]}
  - name: a-kata-name
    runtimeClass: kata-rc
    match: {anyImage: ["**"], namespaces: ["nam?"]}
`)
	runEval(t, snap, []evalCase{
		{name: "higher priority wins even when less isolated", facts: facts(t, "prio", nil, nil, "nginx"),
			want: want{class: "runc-rc", rule: "p/a-runc-high", action: ActionSet, reason: []string{"namespace is prio"}}},
		{name: "default priority 0 beats negative", facts: facts(t, "negative", nil, nil, "nginx"),
			want: want{class: "kata-rc", rule: "p/z-kata-low", action: ActionSet, reason: []string{"namespace matches one of [prio, negative]"}}},
		{name: "tie: the more isolated class wins over the rule name", facts: facts(t, "tie", nil, nil, "nginx"),
			want: want{class: "kata-rc", rule: "p/z-kata-tie", action: ActionSet, reason: []string{"kubernetes.io/metadata.name=tie"}}},
		{name: "tie on class: the rule name decides", facts: facts(t, "name", nil, nil, "nginx"),
			want: want{class: "kata-rc", rule: "p/a-kata-name", action: ActionSet, reason: []string{"namespace matches nam?", "an image matches **"}}},
	})
}

func TestEvaluateDefaultAndNone(t *testing.T) {
	rules := `  rules:
  - name: shop
    runtimeClass: kata-rc
    match: {namespaces: [shop]}
`
	withDefault := compile(t, "p", header+"  defaultRuntimeClass: runc-rc\n"+rules)
	sandboxDefault := compile(t, "p", header+"  defaultRuntimeClass: kata-rc\n"+rules)
	noDefault := compile(t, "p", header+rules)
	none := want{action: ActionNone, reason: []string{"no rule matched and no policy sets a defaultRuntimeClass"}}
	t.Run("runc default", func(t *testing.T) {
		runEval(t, withDefault, []evalCase{
			{name: "unmatched pod gets the default", facts: facts(t, "web", nil, nil, "nginx"), want: defaultTo("p")},
			{name: "a pod naming the default keeps it", facts: withClass(facts(t, "web", nil, nil, "nginx"), "runc-rc"),
				want: want{class: "runc-rc", rule: "p/defaultRuntimeClass", action: ActionKeep, reason: []string{"already names runc-rc", "defaultRuntimeClass"}}},
		})
	})
	t.Run("sandboxed default", func(t *testing.T) {
		runEval(t, sandboxDefault, []evalCase{
			{name: "unmatched pod gets kata", facts: facts(t, "web", nil, nil, "nginx"),
				want: want{class: "kata-rc", rule: "p/defaultRuntimeClass", action: ActionSet, reason: []string{"sets defaultRuntimeClass kata-rc"}}},
			{name: "a pod naming runc is denied", facts: withClass(facts(t, "web", nil, nil, "nginx"), "runc-rc"),
				want: want{class: "kata-rc", rule: "p/defaultRuntimeClass", action: ActionDeny, reason: []string{"runc-rc, which is less isolated", "name one of: kata-rc"}}},
		})
	})
	t.Run("no default", func(t *testing.T) {
		runEval(t, noDefault, []evalCase{
			{name: "unmatched pod is left alone", facts: facts(t, "web", nil, nil, "nginx"), want: none},
			{name: "its own class is reported", facts: withClass(facts(t, "web", nil, nil, "nginx"), "gvisor"),
				want: want{class: "gvisor", action: ActionNone, reason: none.reason}},
			{name: "a matching rule still applies", facts: facts(t, "shop", nil, nil, "nginx"),
				want: want{class: "kata-rc", rule: "p/shop", action: ActionSet, reason: []string{"namespace is shop"}}},
		})
	})
	t.Run("nil snapshot", func(t *testing.T) {
		var s *Snapshot
		runEval(t, s, []evalCase{{name: "no policy loaded", facts: withClass(facts(t, "web", nil, nil), "runc-rc"),
			want: want{class: "runc-rc", action: ActionNone, reason: none.reason}}})
	})
}

func TestEvaluatePodNamedClass(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: deny-weaker
    runtimeClass: kata-rc
    match: {namespaces: [strict]}
  - name: replace-weaker
    runtimeClass: kata-rc
    userRuntimeClass: Replace
    match: {namespaces: [lenient]}
  - name: plain
    runtimeClass: runc-rc
    match: {namespaces: [plain]}
`)
	runEval(t, snap, []evalCase{
		{name: "same class is kept", facts: withClass(facts(t, "strict", nil, nil, "nginx"), "kata-rc"),
			want: want{class: "kata-rc", rule: "p/deny-weaker", action: ActionKeep, reason: []string{"the pod already names kata-rc", "namespace is strict"}}},
		{name: "more isolated class is kept", facts: withClass(facts(t, "plain", nil, nil, "nginx"), "kata-rc"),
			want: want{class: "kata-rc", rule: "p/plain", action: ActionKeep, reason: []string{"the pod names kata-rc, at least as isolated as runc-rc", "namespace is plain"}}},
		{name: "less isolated class is denied", facts: withClass(facts(t, "strict", nil, nil, "nginx"), "runc-rc"),
			want: want{class: "kata-rc", rule: "p/deny-weaker", action: ActionDeny, reason: []string{
				"runtime class runc-rc, which is less isolated", "namespace is strict", "requires kata-rc", "remove runtimeClassName or name one of: kata-rc"}}},
		{name: "less isolated class is replaced", facts: withClass(facts(t, "lenient", nil, nil, "nginx"), "runc-rc"),
			want: want{class: "kata-rc", rule: "p/replace-weaker", action: ActionReplace, reason: []string{"runc-rc, which is less isolated", "replaced with kata-rc because namespace is lenient"}}},
		{name: "unknown class is denied under a runc rule", facts: withClass(facts(t, "plain", nil, nil, "nginx"), "gvisor"),
			want: want{class: "runc-rc", rule: "p/plain", action: ActionDeny, reason: []string{
				"gvisor, which no policy lists (unknown classes count as least isolated)", "name one of: kata-rc, runc-rc"}}},
		{name: "unknown class is denied under the default", facts: withClass(facts(t, "web", nil, nil, "nginx"), "gvisor"),
			want: want{class: "runc-rc", rule: "p/defaultRuntimeClass", action: ActionDeny, reason: []string{"gvisor, which no policy lists"}}},
		{name: "unknown class is replaced", facts: withClass(facts(t, "lenient", nil, nil, "nginx"), "gvisor"),
			want: want{class: "kata-rc", rule: "p/replace-weaker", action: ActionReplace, reason: []string{"gvisor, which no policy lists", "replaced with kata-rc"}}},
		{name: "more isolated class kept under a Replace rule", facts: withClass(facts(t, "lenient", nil, nil, "nginx"), "kata-rc"),
			want: want{class: "kata-rc", rule: "p/replace-weaker", action: ActionKeep, reason: []string{"already names kata-rc"}}},
	})
}

func TestEvaluateHostNamespaces(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: sandbox
    runtimeClass: kata-rc
    match: {namespaces: [shop]}
  - name: sandbox-replace
    runtimeClass: kata-rc
    userRuntimeClass: Replace
    match: {namespaces: [tenant]}
`)
	host := func(f Facts, network, pid, ipc bool) Facts {
		f.HostNetwork, f.HostPID, f.HostIPC = network, pid, ipc
		return f
	}
	shop := facts(t, "shop", nil, nil, "nginx")
	web := facts(t, "web", nil, nil, "nginx")
	runEval(t, snap, []evalCase{
		{name: "hostNetwork", facts: host(shop, true, false, false),
			want: want{class: "kata-rc", rule: "p/sandbox", action: ActionDeny, reason: []string{
				"the pod uses hostNetwork, but kata-rc is a sandboxed (VM) runtime class", "namespace is shop, so kata-rc is required", "Remove hostNetwork"}}},
		{name: "hostPID", facts: host(shop, false, true, false),
			want: want{class: "kata-rc", rule: "p/sandbox", action: ActionDeny, reason: []string{"the pod uses hostPID,", "Remove hostPID"}}},
		{name: "hostIPC", facts: host(shop, false, false, true),
			want: want{class: "kata-rc", rule: "p/sandbox", action: ActionDeny, reason: []string{"the pod uses hostIPC,"}}},
		{name: "all three", facts: host(shop, true, true, true),
			want: want{class: "kata-rc", rule: "p/sandbox", action: ActionDeny, reason: []string{"hostNetwork and hostPID and hostIPC"}}},
		{name: "kept kata is still denied", facts: withClass(host(shop, true, false, false), "kata-rc"),
			want: want{class: "kata-rc", rule: "p/sandbox", action: ActionDeny, reason: []string{"the pod uses hostNetwork", "kata-rc is required"}}},
		{name: "replaced to kata is denied", facts: withClass(host(facts(t, "tenant", nil, nil, "nginx"), false, true, false), "runc-rc"),
			want: want{class: "kata-rc", rule: "p/sandbox-replace", action: ActionDeny, reason: []string{"the pod uses hostPID", "namespace is tenant, so kata-rc is required"}}},
		{name: "the pod names the sandboxed class itself", facts: withClass(host(web, true, false, false), "kata-rc"),
			want: want{class: "kata-rc", rule: "p/defaultRuntimeClass", action: ActionDeny, reason: []string{
				"the pod uses hostNetwork, but kata-rc is a sandboxed", "the pod names kata-rc itself", "which requires runc-rc", "name runc-rc or remove runtimeClassName"}}},
		{name: "runc with host namespaces is fine", facts: host(web, true, true, true), want: defaultTo("p")},
	})
}

func TestEvaluateAudit(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - name: shop
    runtimeClass: kata-rc
    match: {namespaces: [shop]}
  - name: quay
    runtimeClass: kata-rc
    mode: Audit
    priority: 1000
    match: {anyImage: ["quay.io/**"]}
  - name: shop-runc
    runtimeClass: runc-rc
    mode: Audit
    match: {namespaces: [shop]}
`)
	quay := want{class: "kata-rc", rule: "p/quay", action: ActionSet, reason: []string{"an image matches quay.io/**"}}
	hostNet := facts(t, "web", nil, nil, "quay.io/a/b")
	hostNet.HostNetwork = true
	runEval(t, snap, []evalCase{
		{name: "audit outranks nothing: the enforce rule decides", facts: facts(t, "shop", nil, nil, "quay.io/a/b"),
			want: want{class: "kata-rc", rule: "p/shop", action: ActionSet, reason: []string{"namespace is shop"}}, audit: quay},
		{name: "audit rule alone leaves the default", facts: facts(t, "web", nil, nil, "quay.io/a/b"), want: defaultTo("p"), audit: quay},
		{name: "no audit rule matches", facts: facts(t, "web", nil, nil, "nginx"), want: defaultTo("p")},
		{name: "best audit rule among several", facts: facts(t, "shop", nil, nil, "nginx"),
			want:  want{class: "kata-rc", rule: "p/shop", action: ActionSet, reason: []string{"namespace is shop"}},
			audit: want{class: "runc-rc", rule: "p/shop-runc", action: ActionSet, reason: []string{"namespace is shop"}}},
		{name: "audit records a denial it would make", facts: withClass(facts(t, "web", nil, nil, "quay.io/a/b"), "runc-rc"),
			want:  want{class: "runc-rc", rule: "p/defaultRuntimeClass", action: ActionKeep, reason: []string{"already names runc-rc"}},
			audit: want{class: "kata-rc", rule: "p/quay", action: ActionDeny, reason: []string{"runc-rc, which is less isolated"}}},
		{name: "audit records a host-namespace denial", facts: hostNet, want: defaultTo("p"),
			audit: want{class: "kata-rc", rule: "p/quay", action: ActionDeny, reason: []string{"the pod uses hostNetwork"}}},
	})
}

const zeros = "0000000000000000000000000000000000000000000000000000000000000000"
