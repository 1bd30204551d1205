package policy

import (
	"slices"
	"strings"
	"testing"
)

// gpuCluster is a v1alpha2 platform policy on a cluster that already runs GPU nodes
// and kata-deploy's classes.
const gpuCluster = `apiVersion: isolator.dev/v1alpha2
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: runc-rc, isolation: Container}
  - {name: nvidia, isolation: Container}
  - {name: kata-rc, isolation: VM}
  - {name: kata-clh, isolation: VM}
  - {name: gvisor, isolation: Kernel}
  defaultRuntimeClass: runc-rc
  rules:
  - name: untrusted
    runtimeClass: kata-rc
    priority: 100
    match: {namespaceSelector: {matchLabels: {isolator.dev/trust: untrusted}}}
  - name: sandbox-tools
    runtimeClass: gvisor
    priority: 50
    match: {anyImage: ["registry.example.com/tools/**"]}
`

func TestIsolationTiers(t *testing.T) {
	snap := compile(t, "platform", gpuCluster)
	untrusted := map[string]string{"isolator.dev/trust": "untrusted"}
	for _, tc := range []struct {
		what     string
		ns       map[string]string
		class    string
		image    string
		hostNet  bool
		want     want
		accepted string
	}{
		{"the GPU pod keeps nvidia, a Container class like the default", nil, "nvidia", "nvcr.io/nvidia/pytorch:24.01", false,
			want{"nvidia", "platform/defaultRuntimeClass", ActionKeep, []string{"nvidia, as isolated as runc-rc (both Container)"}}, ""},
		{"a class no policy lists counts as Container", nil, "wasmtime", "ghcr.io/acme/app:1", false,
			want{"wasmtime", "platform/defaultRuntimeClass", ActionKeep, []string{"no policy lists, which counts as Container isolation"}}, ""},
		{"kata-clh is kept where kata-rc is required", untrusted, "kata-clh", "nginx", false,
			want{"kata-clh", "platform/untrusted", ActionKeep, []string{"kata-clh, as isolated as kata-rc (both VM)"}}, ""},
		{"no class where a VM is required: set", untrusted, "", "nginx", false,
			want{"kata-rc", "platform/untrusted", ActionSet, nil}, ""},
		{"gvisor is not a VM", untrusted, "gvisor", "nginx", false,
			want{"kata-rc", "platform/untrusted", ActionDeny, []string{"gvisor, which is less isolated", "name one of: kata-rc, kata-clh"}}, "kata-rc,kata-clh"},
		{"nvidia is not a VM", untrusted, "nvidia", "nginx", false,
			want{"kata-rc", "platform/untrusted", ActionDeny, []string{"nvidia, which is less isolated"}}, ""},
		{"an unknown class is not a VM", untrusted, "wasmtime", "nginx", false,
			want{"kata-rc", "platform/untrusted", ActionDeny, []string{"wasmtime, which no policy lists (unknown classes count as Container isolation, less than VM)"}}, ""},
		{"a VM is at least a Kernel", nil, "kata-clh", "registry.example.com/tools/lint:1", false,
			want{"kata-clh", "platform/sandbox-tools", ActionKeep, []string{"at least as isolated as gvisor"}}, ""},
		{"host namespaces are refused a VM", untrusted, "", "nginx", true,
			want{"kata-rc", "platform/untrusted", ActionDeny, []string{"the pod uses hostNetwork, but kata-rc is a sandboxed (VM) runtime class"}}, ""},
		{"host namespaces may run in a Kernel class", nil, "", "registry.example.com/tools/lint:1", true,
			want{"gvisor", "platform/sandbox-tools", ActionSet, nil}, ""},
	} {
		t.Run(tc.what, func(t *testing.T) {
			f := Facts{Namespace: "ml", NamespaceLabels: tc.ns, Images: images(t, tc.image), RuntimeClassName: tc.class, HostNetwork: tc.hostNet}
			checkDecision(t, snap, &f)
			checkOutcome(t, tc.what, snap.Evaluate(&f).Outcome, tc.want)
		})
	}
	if got := strings.Join(snap.Accepted("kata-rc"), ","); got != "kata-rc,kata-clh" {
		t.Errorf("Accepted(kata-rc) = %s, want kata-rc,kata-clh", got)
	}
	if got := strings.Join(snap.Accepted("runc-rc"), ","); got != "kata-rc,kata-clh,gvisor,runc-rc,nvidia" {
		t.Errorf("Accepted(runc-rc) = %s", got)
	}
	var tiers []string
	for _, c := range snap.Classes() {
		tiers = append(tiers, c.Name+"="+string(c.Isolation))
		if c.Sandboxed != (c.Isolation != IsolationContainer) || c.VM() != (c.Isolation == IsolationVM) {
			t.Errorf("class %+v: sandboxed and VM don't follow its tier", c)
		}
	}
	if want := []string{"kata-rc=VM", "kata-clh=VM", "gvisor=Kernel", "runc-rc=Container", "nvidia=Container"}; !slices.Equal(tiers, want) {
		t.Errorf("merged classes %v, want %v", tiers, want)
	}
}

func TestUnknownRuntimeClassesDeny(t *testing.T) {
	snap := compile(t, "platform", strings.Replace(gpuCluster, "  defaultRuntimeClass: runc-rc", "  unknownRuntimeClasses: Deny\n  defaultRuntimeClass: runc-rc", 1))
	f := Facts{Namespace: "ml", RuntimeClassName: "wasmtime", Images: images(t, "ghcr.io/acme/app:1")}
	checkOutcome(t, "unknown class, Deny", snap.Evaluate(&f).Outcome, want{"runc-rc", "platform/defaultRuntimeClass", ActionDeny,
		[]string{"wasmtime, which no policy lists (policy platform sets unknownRuntimeClasses: Deny)"}})
	// nvidia is listed, so it is kept all the same.
	f.RuntimeClassName = "nvidia"
	checkOutcome(t, "nvidia, Deny", snap.Evaluate(&f).Outcome, want{"nvidia", "platform/defaultRuntimeClass", ActionKeep, nil})
}

// A v1alpha1 policy merged with a v1alpha2 one: the v1alpha1 policy still counts
// unknown classes as least isolated and still ranks its own list, and a pod is held to
// both, as with two v1alpha1 policies.
func TestMixedVersions(t *testing.T) {
	snap := compile(t, "platform", gpuCluster, "legacy", `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses:
  - {name: kata-rc, sandboxed: true}
  - {name: kata-clh, sandboxed: true}
  - {name: runc-rc}
`)
	f := Facts{Namespace: "shop", NamespaceLabels: map[string]string{"isolator.dev/trust": "untrusted"}, RuntimeClassName: "kata-clh", Images: images(t, "nginx")}
	checkOutcome(t, "kata-clh under a v1alpha1 order", snap.Evaluate(&f).Outcome, want{"kata-rc", "platform/untrusted", ActionDeny, []string{"kata-clh, which is less isolated"}})
	f = Facts{Namespace: "ml", RuntimeClassName: "wasmtime", Images: images(t, "nginx")}
	checkOutcome(t, "unknown class with a v1alpha1 policy listing the default", snap.Evaluate(&f).Outcome, want{"runc-rc", "platform/defaultRuntimeClass", ActionDeny, []string{"unknown classes count as least isolated"}})
}

func TestV1alpha2FieldsNeedV1alpha2(t *testing.T) {
	p, errs := Parse([]byte(`apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  unknownRuntimeClasses: Container
  runtimeClasses: [{name: kata-rc, isolation: VM}, {name: runc-rc}]
  rules:
  - {name: r, runtimeClass: kata-rc, match: {namespaces: [a]}, exclude: [{namespaces: [b]}]}
`), nil)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	var got []string
	for _, e := range Validate(p, nil) {
		got = append(got, e.Field)
	}
	if want := []string{"spec.runtimeClasses[0].isolation", "spec.unknownRuntimeClasses", "spec.rules[0].exclude"}; !slices.Equal(got, want) {
		t.Errorf("errors at %v, want %v", got, want)
	}
	p, _ = Parse([]byte(`apiVersion: isolator.dev/v1alpha2
kind: RuntimePolicy
spec:
  unknownRuntimeClasses: Allow
  runtimeClasses: [{name: kata-rc, isolation: Hypervisor}, {name: x, sandboxed: true, isolation: Container}, {name: runc-rc}]
  rules:
  - {name: r, runtimeClass: kata-rc, match: {namespaces: [a]}, exclude: [{}, {serviceAccountNames: [Bad_Name]}]}
`), nil)
	got = nil
	for _, e := range Validate(p, nil) {
		got = append(got, e.Field+": "+e.Type.String())
	}
	want := []string{"spec.runtimeClasses[0].isolation: Unsupported value", "spec.runtimeClasses[1].isolation: Invalid value",
		"spec.unknownRuntimeClasses: Unsupported value", "spec.rules[0].exclude[0]: Required value", "spec.rules[0].exclude[1].serviceAccountNames[0]: Invalid value"}
	if !slices.Equal(got, want) {
		t.Errorf("errors %v, want %v", got, want)
	}
}

func TestExclusions(t *testing.T) {
	snap := compile(t, "platform", `apiVersion: isolator.dev/v1alpha2
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, isolation: VM}, {name: runc-rc, isolation: Container}]
  defaultRuntimeClass: runc-rc
  rules:
  - name: tenants
    runtimeClass: kata-rc
    match: {namespaces: ["tenant-*"]}
    exclude:
    - {namespaces: [tenant-infra]}
    - {namespaces: ["tenant-*"], serviceAccountNames: [platform-agent]}
    - {namespaceSelector: {matchLabels: {isolator.dev/tier: platform}}}
`)
	for _, tc := range []struct {
		what, ns, sa string
		nsLabels     map[string]string
		want         string
	}{
		{"a tenant pod", "tenant-a", "", nil, "platform/tenants"},
		{"an excluded namespace", "tenant-infra", "", nil, "platform/defaultRuntimeClass"},
		{"an excluded service account", "tenant-a", "platform-agent", nil, "platform/defaultRuntimeClass"},
		{"another service account", "tenant-a", "builder", nil, "platform/tenants"},
		{"an excluded namespace label", "tenant-b", "", map[string]string{"isolator.dev/tier": "platform"}, "platform/defaultRuntimeClass"},
	} {
		f := Facts{Namespace: tc.ns, NamespaceLabels: tc.nsLabels, ServiceAccountName: tc.sa, Images: images(t, "nginx")}
		checkDecision(t, snap, &f)
		if got := snap.Evaluate(&f).Rule; got != tc.want {
			t.Errorf("%s: decided by %s, want %s", tc.what, got, tc.want)
		}
	}
	warn := compile(t, "p", `apiVersion: isolator.dev/v1alpha2
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, isolation: VM}]
  rules:
  - name: tenants
    runtimeClass: kata-rc
    match: {namespaces: ["tenant-*"]}
    exclude: [{podSelector: {matchLabels: {exempt: "yes"}}}, {serviceAccountNames: [ci]}, {namespaces: [t], serviceAccountNames: [ci]}]
`).Warnings()
	if len(warn) != 2 || !strings.Contains(warn[0], "spec.rules[0].exclude[0]: podSelector: pod authors set their pods' labels") ||
		!strings.Contains(warn[1], "spec.rules[0].exclude[1]: serviceAccountNames without namespaces") {
		t.Errorf("warnings %q", warn)
	}
}

// TestSelfExemptingMatchWarns: a rule a pod leaves by setting one of its own labels
// (NotIn, DoesNotExist) is an exemption its author controls.
func TestSelfExemptingMatchWarns(t *testing.T) {
	warn := compile(t, "p", `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, sandboxed: true}]
  rules:
  - name: ci
    runtimeClass: kata-rc
    match:
      podSelector:
        matchExpressions:
        - {key: app, operator: In, values: [runner]}
        - {key: exempt, operator: DoesNotExist}
        - {key: tier, operator: NotIn, values: [platform]}
`).Warnings()
	if len(warn) != 2 || !strings.Contains(warn[0], "spec.rules[0].match.podSelector.matchExpressions[1]: DoesNotExist exempt: pod authors set their pods' labels, so any pod can leave rule ci") ||
		!strings.Contains(warn[1], "spec.rules[0].match.podSelector.matchExpressions[2]: NotIn tier") {
		t.Errorf("warnings %q", warn)
	}
}

func teamSource(t *testing.T, ns, name, doc string) Source {
	t.Helper()
	s := src(t, name, doc)
	s.Namespace = ns
	s.AsTeam("isolator-system")
	return s
}

const tenantTeam = `apiVersion: isolator.dev/v1alpha2
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, isolation: VM}, {name: runc-rc, isolation: Container}]
  rules:
  - name: quay-images
    runtimeClass: kata-rc
    match: {anyImage: ["quay.io/**"]}
  - name: everything-on-runc
    runtimeClass: runc-rc
    priority: -1
    match: {podSelector: {}}
`

func TestTeamPolicies(t *testing.T) {
	cluster := src(t, "platform", gpuCluster)
	team := teamSource(t, "tenant-a", "team", tenantTeam)
	if team.Name != "tenant-a/team" || team.Team != "tenant-a" {
		t.Fatalf("team source %q for %q", team.Name, team.Team)
	}
	snap, err := Compile(cluster, team)
	if err != nil {
		t.Fatal(err)
	}
	untrusted := map[string]string{"isolator.dev/trust": "untrusted"}
	for _, tc := range []struct {
		what     string
		ns       string
		nsLabels map[string]string
		class    string
		image    string
		want     want
	}{
		{"a team rule moves its pods to kata-rc", "tenant-a", nil, "", "quay.io/acme/x:1", want{"kata-rc", "tenant-a/team/quay-images", ActionSet, nil}},
		{"and denies them runc-rc", "tenant-a", nil, "runc-rc", "quay.io/acme/x:1", want{"kata-rc", "tenant-a/team/quay-images", ActionDeny, []string{"runc-rc, which is less isolated"}}},
		{"kata-rc named by the pod is kept", "tenant-a", nil, "kata-rc", "quay.io/acme/x:1", want{"kata-rc", "tenant-a/team/quay-images", ActionKeep, nil}},
		{"other namespaces are not the team's", "tenant-b", nil, "", "quay.io/acme/x:1", want{"runc-rc", "platform/defaultRuntimeClass", ActionSet, nil}},
		{"a team rule can't weaken a cluster rule", "tenant-a", untrusted, "", "ghcr.io/acme/x:1", want{"kata-rc", "platform/untrusted", ActionSet, nil}},
		{"nor exempt its pods by naming runc", "tenant-a", untrusted, "runc-rc", "ghcr.io/acme/x:1", want{"kata-rc", "platform/untrusted", ActionDeny, nil}},
		{"an equal decision stays the cluster's", "tenant-a", nil, "", "ghcr.io/acme/x:1", want{"runc-rc", "platform/defaultRuntimeClass", ActionSet, nil}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			f := Facts{Namespace: tc.ns, NamespaceLabels: tc.nsLabels, RuntimeClassName: tc.class, Images: images(t, tc.image)}
			checkDecision(t, snap, &f)
			checkOutcome(t, tc.what, snap.Evaluate(&f).Outcome, tc.want)
		})
	}
	warns := strings.Join(snap.Warnings(), "\n")
	for _, w := range []string{
		"spec.rules[1] (everything-on-runc) decides runc-rc, less isolated than cluster rule platform/untrusted (kata-rc), which may apply to the same pods of namespace tenant-a",
		"spec.rules[1] (everything-on-runc) decides runc-rc, less isolated than cluster rule platform/sandbox-tools (gvisor)",
	} {
		if !strings.Contains(warns, w) {
			t.Errorf("warnings lack %q:\n%s", w, warns)
		}
	}
	if got := strings.Join(snap.Sources(), ","); got != "platform,tenant-a/team" {
		t.Errorf("sources %s", got)
	}
	var teamRules []string
	for _, r := range snap.Rules() {
		if r.Team != "" {
			teamRules = append(teamRules, r.Team+":"+r.Qualified)
		}
	}
	if want := []string{"tenant-a:tenant-a/team/quay-images", "tenant-a:tenant-a/team/everything-on-runc"}; !slices.Equal(teamRules, want) {
		t.Errorf("team rules %v, want %v", teamRules, want)
	}
}

// A team policy that reaches beyond its namespace, re-tiers a class, lists a class the
// cluster doesn't, or sets how unknown classes are treated does not apply: its
// namespace keeps the cluster's decisions, and a warning says why.
func TestTeamPoliciesThatDoNotFit(t *testing.T) {
	cluster := src(t, "platform", gpuCluster)
	for _, tc := range []struct{ what, doc, problem string }{
		{"another namespace", strings.Replace(tenantTeam, `match: {anyImage: ["quay.io/**"]}`, `match: {namespaces: [tenant-b], anyImage: ["quay.io/**"]}`, 1),
			"spec.rules[0].match.namespaces: Forbidden: a team policy applies to the pods of its own namespace (tenant-a) only"},
		{"a namespace selector", strings.Replace(tenantTeam, `match: {anyImage: ["quay.io/**"]}`, `match: {namespaceSelector: {}}`, 1),
			"spec.rules[0].match.namespaceSelector: Forbidden"},
		{"runc-rc re-tiered as a VM", strings.Replace(tenantTeam, "{name: runc-rc, isolation: Container}", "{name: runc-rc, isolation: VM}", 1),
			"the cluster policies give runc-rc isolation Container, and a team policy can't change it"},
		{"a class the cluster doesn't list", strings.Replace(tenantTeam, "{name: runc-rc, isolation: Container}", "{name: runc-rc, isolation: Container}, {name: my-vm, isolation: VM}", 1),
			"spec.runtimeClasses[2].name: Not found: \"my-vm\": a team policy uses only the classes the cluster policies list"},
		{"unknown classes", strings.Replace(tenantTeam, "  rules:", "  unknownRuntimeClasses: Container\n  rules:", 1),
			"spec.unknownRuntimeClasses: Forbidden"},
	} {
		t.Run(tc.what, func(t *testing.T) {
			snap, err := Compile(cluster, teamSource(t, "tenant-a", "team", tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if got := snap.TeamNamespaces(); len(got) != 0 {
				t.Errorf("the team policy applies in %v", got)
			}
			warns := strings.Join(snap.Warnings(), "\n")
			if !strings.Contains(warns, "the team policy for namespace tenant-a does not apply") || !strings.Contains(warns, tc.problem) {
				t.Errorf("warnings do not say %q:\n%s", tc.problem, warns)
			}
			f := Facts{Namespace: "tenant-a", Images: images(t, "quay.io/acme/x:1")}
			if got := snap.Evaluate(&f).Rule; got != "platform/defaultRuntimeClass" {
				t.Errorf("decided by %s, want the cluster's platform/defaultRuntimeClass", got)
			}
		})
	}
}
