package backstop

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/policy"
)

const examplesDir = "../manifests/examples"

// exampleFiles are the policy files under manifests/examples (pods.yaml holds pods).
func exampleFiles(t testing.TB) []string {
	t.Helper()
	// The examples directory and its cluster-wide/ subdirectory.
	files, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	more, err2 := filepath.Glob(filepath.Join(examplesDir, "*", "*.yaml"))
	if err != nil || err2 != nil || len(files) == 0 || len(more) == 0 {
		t.Fatalf("no example policies in %s: %v %v", examplesDir, err, err2)
	}
	return slices.DeleteFunc(append(files, more...), func(f string) bool { return filepath.Base(f) == "pods.yaml" })
}

func loadSnapshot(t testing.TB, files ...string) *policy.Snapshot {
	t.Helper()
	var sources []policy.Source
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		srcs, errs := policy.ReadSources(filepath.Base(f), bytes.NewReader(data))
		for _, e := range errs {
			t.Fatalf("%s: %v", f, e)
		}
		for i := range srcs {
			srcs[i].AsTeam(DefaultNamespace)
		}
		sources = append(sources, srcs...)
	}
	snap, err := policy.Compile(sources...)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func render(t testing.TB, snap *policy.Snapshot) string {
	t.Helper()
	vaps, bindings, err := Generate(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, "yaml", vaps, bindings); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestGenerateGolden compares the backstop of every example policy, alone and all
// merged, with testdata/*.golden.yaml. Refresh with UPDATE_GOLDEN=1.
func TestGenerateGolden(t *testing.T) {
	cases := map[string][]string{"all-examples": exampleFiles(t)}
	for _, f := range exampleFiles(t) {
		cases[strings.TrimSuffix(filepath.Base(f), ".yaml")] = []string{f}
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			got := render(t, loadSnapshot(t, files...))
			golden := filepath.Join("testdata", name+".golden.yaml")
			if os.Getenv("UPDATE_GOLDEN") != "" {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
			}
			if got != string(want) {
				t.Errorf("backstop for %s differs from %s (run with UPDATE_GOLDEN=1 to refresh):\n%s", name, golden, got)
			}
		})
	}
	// A golden file no case writes is stale.
	goldens, _ := filepath.Glob("testdata/*.golden.yaml")
	for _, g := range goldens {
		if _, ok := cases[strings.TrimSuffix(filepath.Base(g), ".golden.yaml")]; !ok {
			t.Errorf("%s belongs to no example policy: delete it", g)
		}
	}
}

func TestGenerateNothingWithoutSandboxedScope(t *testing.T) {
	// audit-first.yaml only has an Audit rule: the backstop checks Enforce rules only.
	snap := loadSnapshot(t, filepath.Join(examplesDir, "audit-first.yaml"))
	vaps, bindings, err := Generate(snap, Options{})
	if err != nil || len(vaps) != 0 || len(bindings) != 0 {
		t.Fatalf("Generate = %d policies, %d bindings, %v; want nothing", len(vaps), len(bindings), err)
	}
	if vaps, bindings, err := Generate(nil, Options{}); err != nil || vaps != nil || bindings != nil {
		t.Fatalf("Generate(nil) = %v, %v, %v; want nothing", vaps, bindings, err)
	}
}

func TestGenerateObjectShape(t *testing.T) {
	snap := loadSnapshot(t, exampleFiles(t)...)
	vaps, bindings, err := Generate(snap, Options{Namespace: "isolator", ExcludedNamespaces: []string{"kube-system", "isolator"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(vaps) != 1 || len(bindings) != 1 {
		t.Fatalf("got %d policies and %d bindings, want 1 and 1", len(vaps), len(bindings))
	}
	v, b := vaps[0], bindings[0]
	if v.Name != Name || b.Name != Name || b.Spec.PolicyName != Name {
		t.Errorf("names: policy %q, binding %q -> %q; want %q", v.Name, b.Name, b.Spec.PolicyName, Name)
	}
	for _, m := range []metav1.ObjectMeta{v.ObjectMeta, b.ObjectMeta} {
		if m.Labels[ManagedByLabel] != ManagedByValue {
			t.Errorf("%s lacks label %s=%s", m.Name, ManagedByLabel, ManagedByValue)
		}
		if got, want := m.Annotations[SourcesAnnotation], strings.Join(snap.Sources(), ","); got != want {
			t.Errorf("%s annotation %s = %q, want %q", m.Name, SourcesAnnotation, got, want)
		}
	}
	if v.Spec.FailurePolicy == nil || *v.Spec.FailurePolicy != "Fail" {
		t.Errorf("failurePolicy = %v, want Fail", v.Spec.FailurePolicy)
	}
	if got := b.Spec.ValidationActions; len(got) != 1 || got[0] != "Deny" {
		t.Errorf("validationActions = %v, want [Deny]", got)
	}
	sel := b.Spec.MatchResources.NamespaceSelector.MatchExpressions
	if len(sel) != 1 || sel[0].Key != "kubernetes.io/metadata.name" || sel[0].Operator != metav1.LabelSelectorOpNotIn ||
		!slices.Equal(sel[0].Values, []string{"isolator", "kube-system"}) {
		t.Errorf("binding namespaceSelector = %+v, want kubernetes.io/metadata.name NotIn [isolator kube-system]", sel)
	}
	rr := v.Spec.MatchConstraints.ResourceRules
	if len(rr) != 2 || !slices.Equal(rr[0].Resources, []string{"pods"}) || !slices.Equal(rr[0].Operations, []admissionregistrationv1.OperationType{"CREATE", "UPDATE"}) ||
		!slices.Equal(rr[1].Resources, []string{"pods/ephemeralcontainers"}) || len(rr[1].Operations) != 1 || rr[1].Operations[0] != "UPDATE" {
		t.Errorf("matchConstraints = %+v, want pods CREATE and UPDATE, and pods/ephemeralcontainers UPDATE", rr)
	}
	if mc := v.Spec.MatchConditions; len(mc) != 2 || mc[1].Name != ImageChangeCondition {
		t.Errorf("matchConditions = %+v, want the mirror-pod condition and %s", mc, ImageChangeCondition)
	}
}

// world is a set of namespaces the differential tests place pods in.
var world = map[string]map[string]string{
	"shop":        {"isolator.dev/trust": "untrusted"},
	"payments":    {"isolator.dev/trust": "trusted"},
	"web":         {"isolator.dev/trust": "internet-facing"},
	"tenant-acme": {},
	"customer-1":  {"isolator.dev/trust": "trusted"},
	"monitoring":  {"isolator.dev/trust": "trusted"},
	"default":     {},
}

var (
	podImages = []string{
		"nginx", "nginx:1.25", "index.docker.io/library/redis:7", "bitnami/redis", "quay.io/prometheus/node-exporter:v1.8.0",
		"ghcr.io/acme/app:1", "registry.example.com/platform/ledger:2.0.1", "REGISTRY.example.com/platform/cache",
		"registry.example.com/shop/storefront:1.4.2", "registry.k8s.io/pause:3.10", "registry.example.com/agents/fluent-bit:3",
		"localhost:5000/x", "registry.example.com/platform/runner@sha256:" + strings.Repeat("e", 64),
		// Other spellings of the same registries.
		"registry.example.com:0443/platform/ledger:2.0.1", "REGISTRY.EXAMPLE.COM:443/shop/storefront", "docker.io:0443/library/nginx",
		"registry.hub.docker.com/bitnami/redis", "quay.io:00443/prometheus/node-exporter", "localhost:05000/x",
	}
	podLabelSets = []map[string]string{
		nil, {"app": "ci-runner"}, {"app": "web"}, {"app.kubernetes.io/name": "gitlab-runner"},
		{"app.kubernetes.io/name": "actions-runner", "isolator.dev/exempt": "yes"}, {"app": "build-agent"},
	}
	podClasses = []string{"", "", "kata-rc", "runc-rc", "gvisor", "kata-clh", "nvidia", "wasm"}
)

func randomPod(r *rand.Rand, i int) (*corev1.Pod, *corev1.Namespace) {
	nsNames := make([]string, 0, len(world))
	for n := range world {
		nsNames = append(nsNames, n)
	}
	slices.Sort(nsNames)
	nsName := pick(r, nsNames)
	labels := map[string]string{"kubernetes.io/metadata.name": nsName}
	for k, v := range world[nsName] {
		labels[k] = v
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName, Labels: labels}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i), Namespace: nsName, Labels: pick(r, podLabelSets)}}
	for n := 1 + r.IntN(2); n > 0; n-- {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", n), Image: pick(r, podImages)})
	}
	if r.IntN(3) == 0 {
		pod.Spec.InitContainers = []corev1.Container{{Name: "init", Image: pick(r, podImages)}}
	}
	if c := pick(r, podClasses); c != "" {
		pod.Spec.RuntimeClassName = &c
	}
	pod.Spec.ServiceAccountName = pick(r, []string{"", "default", "platform-agent"})
	pod.Spec.HostNetwork = r.IntN(8) == 0
	pod.Spec.HostPID = r.IntN(16) == 0
	return pod, ns
}

func evaluate(t testing.TB, snap *policy.Snapshot, pod *corev1.Pod, ns *corev1.Namespace) policy.Decision {
	t.Helper()
	f := facts(t, pod, ns)
	return snap.Evaluate(&f)
}

func facts(t testing.TB, pod *corev1.Pod, ns *corev1.Namespace) policy.Facts {
	t.Helper()
	data, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	var p policy.Pod
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	f, err := p.Facts(ns.Name, ns.Labels)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// decidedClass is the class the winning rule (or the default) picks, before the pod's
// own class is considered.
func decidedClass(snap *policy.Snapshot, d policy.Decision) string {
	if d.Action == policy.ActionNone {
		return ""
	}
	for _, r := range snap.Rules() {
		if r.Qualified == d.Rule {
			return r.Rule.RuntimeClass
		}
	}
	c, rule, _ := snap.Default()
	if rule == d.Rule {
		return c
	}
	for _, ns := range snap.TeamNamespaces() {
		if c, rule, _ := snap.TeamDefault(ns); rule == d.Rule {
			return c
		}
	}
	return ""
}

// TestBackstopAgreesWithEvaluate evaluates the generated CEL with the apiserver's CEL
// code for random pods and checks it against policy.Evaluate:
//   - as the pod arrives (the webhook down), the backstop denies exactly the pods whose
//     decided class is sandboxed and which don't name an accepted class, and pods that
//     name a sandboxed class with host namespaces;
//   - after the webhook mutated the pod, the backstop admits every pod the webhook
//     admits.
func TestBackstopAgreesWithEvaluate(t *testing.T) {
	ctx := context.Background()
	sets := map[string][]string{"all-examples": exampleFiles(t), "tiers": {filepath.Join("testdata", "policies", "tiers.yaml")}}
	for _, f := range exampleFiles(t) {
		sets[filepath.Base(f)] = []string{f}
	}
	for name, files := range sets {
		t.Run(name, func(t *testing.T) {
			snap := loadSnapshot(t, files...)
			vaps, _, err := Generate(snap, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(vaps) == 0 {
				t.Skip("no sandboxed scope: nothing generated (TestGenerateNothingWithoutSandboxedScope)")
			}
			p := compilePolicy(t, vaps[0])
			r := rand.New(rand.NewPCG(7, uint64(len(name))))
			var denied, admitted int
			for i := range 400 {
				pod, ns := randomPod(r, i)
				d := evaluate(t, snap, pod, ns)
				rc := ""
				if pod.Spec.RuntimeClassName != nil {
					rc = *pod.Spec.RuntimeClassName
				}
				wantDeny := false
				wantRule := ""
				if dc := decidedClass(snap, d); dc != "" {
					if c, _ := snap.Class(dc); c.Sandboxed && !slices.Contains(snap.Accepted(dc), rc) {
						wantDeny, wantRule = true, d.Rule
					}
				}
				if c, ok := snap.Class(rc); ok && c.VM() && (pod.Spec.HostNetwork || pod.Spec.HostPID || pod.Spec.HostIPC) {
					wantDeny = true
				}
				v := p.admit(ctx, pod, ns, "alice")
				if len(v.errors) > 0 {
					t.Fatalf("pod %s/%s: CEL errors: %v", ns.Name, pod.Name, v.errors)
				}
				if v.denied != wantDeny {
					t.Errorf("pod %s/%s (labels %v, images %v, class %q, hostNetwork %v): backstop denied=%v, want %v; Evaluate: %+v; messages %v",
						ns.Name, pod.Name, pod.Labels, images(pod), rc, pod.Spec.HostNetwork, v.denied, wantDeny, d.Outcome, v.messages)
				}
				if wantRule != "" && v.denied && !strings.Contains(strings.Join(v.messages, " "), "rule "+wantRule+")") {
					t.Errorf("pod %s/%s: denial %q does not name rule %s", ns.Name, pod.Name, v.messages, wantRule)
				}
				if v.denied {
					denied++
				} else {
					admitted++
				}
				// The webhook's own output passes the backstop.
				switch d.Action {
				case policy.ActionSet, policy.ActionReplace, policy.ActionKeep:
					mutated := pod.DeepCopy()
					c := d.RuntimeClass
					mutated.Spec.RuntimeClassName = &c
					if v := p.admit(ctx, mutated, ns, "alice"); v.denied {
						t.Errorf("pod %s/%s: the webhook %ss class %s (%s), but the backstop denies it: %v %v", ns.Name, pod.Name, d.Action, c, d.Reason, v.messages, v.errors)
					}
				}
			}
			if denied == 0 || admitted == 0 {
				t.Errorf("%d denied, %d admitted: the random pods miss one side", denied, admitted)
			}
			t.Logf("%d denied, %d admitted", denied, admitted)
		})
	}
}

// TestBackstopAgreesOnImageUpdates: an update that changes a running pod's images is
// refused by the backstop exactly when Snapshot.EvaluateUpdate refuses it (the new
// images need a sandboxed class the pod does not run in), and an update that leaves
// the images alone is never refused, whatever the policy now says of the pod.
func TestBackstopAgreesOnImageUpdates(t *testing.T) {
	ctx := context.Background()
	var denied, allowed int
	for _, files := range [][]string{exampleFiles(t), {filepath.Join(examplesDir, "untrusted-images.yaml")}, {filepath.Join(examplesDir, "policies.yaml")},
		{filepath.Join("testdata", "policies", "tiers.yaml")}} {
		d, a := imageUpdates(ctx, t, files)
		denied, allowed = denied+d, allowed+a
	}
	if denied < 50 || allowed < 50 {
		t.Errorf("%d image updates denied, %d allowed: the random pods miss one side", denied, allowed)
	}
	t.Logf("%d image updates denied, %d allowed", denied, allowed)
}

func imageUpdates(ctx context.Context, t *testing.T, files []string) (denied, allowed int) {
	snap := loadSnapshot(t, files...)
	vaps, _, err := Generate(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := compilePolicy(t, vaps[0])
	r := rand.New(rand.NewPCG(11, uint64(len(files))))
	for i := range 600 {
		pod, ns := randomPod(r, i)
		pod.Spec.HostNetwork, pod.Spec.HostPID = false, false
		// The pod as it runs: as the webhook admitted it, or as it came while the
		// webhook was down and the backstop let it pass.
		switch d := evaluate(t, snap, pod, ns); d.Action {
		case policy.ActionSet, policy.ActionReplace, policy.ActionKeep:
			c := d.RuntimeClass
			pod.Spec.RuntimeClassName = &c
		case policy.ActionDeny:
			continue
		}
		if v := p.admit(ctx, pod, ns, "alice"); v.denied || len(v.errors) > 0 {
			continue
		}
		updated := pod.DeepCopy()
		updated.Labels = map[string]string{"changed": "yes"}
		if v := p.update(ctx, pod, updated, ns, "alice"); v.denied || len(v.errors) > 0 {
			t.Errorf("pod %s/%s: an update that changes no image is refused: %v %v", ns.Name, pod.Name, v.messages, v.errors)
		}
		for j := range updated.Spec.Containers {
			if r.IntN(2) == 0 {
				updated.Spec.Containers[j].Image = pick(r, podImages)
			}
		}
		if len(updated.Spec.InitContainers) > 0 && r.IntN(2) == 0 {
			updated.Spec.InitContainers[0].Image = pick(r, podImages)
		}
		for slices.Equal(images(updated), images(pod)) {
			updated.Spec.Containers[0].Image = pick(r, podImages)
		}
		f := facts(t, updated, ns)
		want := snap.EvaluateUpdate(&f)
		v := p.update(ctx, pod, updated, ns, "alice")
		if len(v.errors) > 0 {
			t.Fatalf("pod %s/%s: CEL errors: %v", ns.Name, pod.Name, v.errors)
		}
		if wantDeny := want.Action == policy.ActionDeny; v.denied != wantDeny {
			t.Errorf("pod %s/%s in %v, images %v -> %v: backstop denied=%v, EvaluateUpdate: %+v; messages %v",
				ns.Name, pod.Name, pod.Spec.RuntimeClassName, images(pod), images(updated), v.denied, want.Outcome, v.messages)
		} else if v.denied && !strings.Contains(strings.Join(v.messages, " "), "rule "+want.Rule+")") {
			t.Errorf("pod %s/%s: denial %q does not name rule %s", ns.Name, pod.Name, v.messages, want.Rule)
		}
		if v.denied {
			denied++
		} else {
			allowed++
		}
	}
	return denied, allowed
}

func images(p *corev1.Pod) []string {
	var out []string
	for _, c := range append(slices.Clone(p.Spec.InitContainers), p.Spec.Containers...) {
		out = append(out, c.Image)
	}
	return out
}

func TestBackstopMirrorPods(t *testing.T) {
	snap := loadSnapshot(t, filepath.Join(examplesDir, "tenant-namespaces.yaml"))
	vaps, _, err := Generate(snap, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p := compilePolicy(t, vaps[0])
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "tenant-a", Labels: map[string]string{"kubernetes.io/metadata.name": "tenant-a"}}}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "static-web-node1", Namespace: "tenant-a", Annotations: map[string]string{MirrorPodAnnotation: "abc"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}},
	}
	for _, tc := range []struct {
		user     string
		wantDeny bool
	}{
		{"system:node:node1", false}, // the kubelet's mirror of a static pod
		{"alice", true},              // anyone else adding the annotation is still checked
	} {
		if v := p.admit(context.Background(), pod, ns, tc.user); v.denied != tc.wantDeny || len(v.errors) > 0 {
			t.Errorf("mirror pod created by %s: denied=%v (errors %v), want %v", tc.user, v.denied, v.errors, tc.wantDeny)
		}
	}
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }
