package backstop

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	celconfig "k8s.io/apiserver/pkg/apis/cel"

	"github.com/isolator-dev/isolator/policy"
)

// largePolicy has n Enforce rules, mixed as a large platform's might be: a quarter each
// scoped by namespace name, namespace label, pod label and image (imageShare of every
// four rules match on images instead when imageShare > 1).
func largePolicy(t testing.TB, n, imageShare int) *policy.Snapshot {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: isolator.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: large}\nspec:\n  runtimeClasses: [{name: kata-rc, sandboxed: true}, {name: runc-rc}]\n  rules:\n")
	for i := range n {
		class := "kata-rc"
		if i%5 == 0 {
			class = "runc-rc"
		}
		fmt.Fprintf(&b, "  - name: r%d\n    runtimeClass: %s\n    priority: %d\n    match:\n", i, class, i%7)
		kind := i % 4
		if kind != 3 && i%4 < imageShare-1 {
			kind = 3
		}
		switch kind {
		case 0:
			fmt.Fprintf(&b, "      namespaces: [\"team-%d-*\", \"t%d\"]\n", i, i)
		case 1:
			fmt.Fprintf(&b, "      namespaceSelector: {matchLabels: {team: t%d}}\n", i)
		case 2:
			fmt.Fprintf(&b, "      podSelector: {matchExpressions: [{key: app, operator: In, values: [a%d, b%d]}]}\n", i, i)
		case 3:
			fmt.Fprintf(&b, "      anyImage: [\"registry.example.com/team-%d/**\", \"docker.io/team%d/*\"]\n", i, i)
		}
	}
	srcs, errs := policy.ReadSources("large.yaml", strings.NewReader(b.String()))
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	snap, err := policy.Compile(srcs...)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// worstPod matches no rule, so the CEL walks every rule; its images are long.
func worstPod(images int) (*corev1.Pod, *corev1.Namespace) {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "nomatch", Labels: map[string]string{"kubernetes.io/metadata.name": "nomatch", "team": "none"}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "nomatch", Labels: map[string]string{"app": "none"}}}
	for i := range images {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{
			Name: fmt.Sprintf("c%d", i), Image: fmt.Sprintf("registry.example.com/some-team/some-service-%d:1.2.3", i),
		})
	}
	return pod, ns
}

// TestCostOfLargePolicies measures, with the apiserver's CEL cost accounting, what
// the backstop of a 1,000-rule policy costs for a pod that falls through every rule,
// and checks it stays within the apiserver's per-policy budget with room to spare.
func TestCostOfLargePolicies(t *testing.T) {
	for _, tc := range []struct {
		name             string
		rules, imageRule int
		images           int
		maxShare         float64 // of RuntimeCELCostBudget
	}{
		{"1000 mixed rules, 3 images", 1000, 1, 3, 0.25},
		{"1000 mixed rules, 10 images", 1000, 1, 10, 0.5},
		{"1000 image rules, 3 images", 1000, 4, 3, 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if raceEnabled && tc.images > 3 {
				t.Skip("slow under the race detector; make unit runs it without")
			}
			snap := largePolicy(t, tc.rules, tc.imageRule)
			vaps, _, err := Generate(snap, Options{})
			if err != nil {
				t.Fatal(err)
			}
			size := 0
			for _, v := range vaps[0].Spec.Variables {
				size += len(v.Expression)
			}
			p := compilePolicy(t, vaps[0])
			pod, ns := worstPod(tc.images)
			cost := p.cost(t, pod, ns)
			budget := float64(celconfig.RuntimeCELCostBudget)
			t.Logf("%s: %d variables, %d bytes of CEL, cost %d (%.1f%% of the %d budget)", tc.name, len(vaps[0].Spec.Variables), size, cost, 100*float64(cost)/budget, celconfig.RuntimeCELCostBudget)
			if float64(cost) > tc.maxShare*budget {
				t.Errorf("cost %d is over %.0f%% of the apiserver's budget %d", cost, 100*tc.maxShare, celconfig.RuntimeCELCostBudget)
			}
		})
	}
}

// BenchmarkGenerate measures rendering the backstop of a 1,000-rule policy, which the
// reconciler does after every policy change.
func BenchmarkGenerate(b *testing.B) {
	snap := largePolicy(b, 1000, 1)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Generate(snap, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
