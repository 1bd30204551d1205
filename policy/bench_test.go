package policy

import (
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// benchSource builds a policy of n rules in a realistic mix: literal namespaces (30%),
// namespace globs (15%), namespace label selectors (20%), pod label selectors (15%) and
// image rules (20%, anyImage and allImages), with a spread of priorities and classes and
// one audit rule in fifty. It is built in Go rather than YAML: 10,000 rules do not fit
// in one 1 MiB document (they would be spread over several ConfigMaps).
func benchSource(n int) Source {
	p := &RuntimePolicy{APIVersion: APIVersion, Kind: Kind, Spec: PolicySpec{
		RuntimeClasses:      []RuntimeClass{{Name: "kata-rc", Sandboxed: true}, {Name: "runc-rc"}},
		DefaultRuntimeClass: "runc-rc",
	}}
	sel := func(expr ...metav1.LabelSelectorRequirement) *metav1.LabelSelector {
		return &metav1.LabelSelector{MatchExpressions: expr}
	}
	for i := range n {
		r := Rule{Name: fmt.Sprintf("r%d", i), RuntimeClass: "kata-rc", Priority: int32(i % 7 * 10)}
		if i%3 == 0 {
			r.RuntimeClass = "runc-rc"
		}
		if i%50 == 49 {
			r.Mode = ModeAudit
		}
		m := &r.Match
		switch k := i % 20; {
		case k < 6:
			m.Namespaces = []string{fmt.Sprintf("team-%d", i), fmt.Sprintf("team-%d-dev", i)}
		case k < 9:
			m.Namespaces = []string{fmt.Sprintf("tenant-%d-*", i)}
		case k < 11:
			m.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i)}}
		case k < 13:
			m.NamespaceSelector = sel(metav1.LabelSelectorRequirement{Key: "cost-center", Operator: metav1.LabelSelectorOpIn,
				Values: []string{fmt.Sprintf("cc-%d", i), fmt.Sprintf("cc-%d", i+1)}})
		case k < 15:
			m.PodSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", i)}}
		case k < 16:
			m.PodSelector = sel(metav1.LabelSelectorRequirement{Key: fmt.Sprintf("isolator.dev/profile-%d", i), Operator: metav1.LabelSelectorOpExists})
			m.Namespaces = []string{"team-*"}
		case k < 18:
			m.AnyImage = []string{fmt.Sprintf("registry.example.com/team-%d/**", i)}
		case k < 19:
			m.AllImages = []string{fmt.Sprintf("quay.io/org-%d/*", i), "registry.example.com/base/**"}
		default:
			m.AnyImage = []string{fmt.Sprintf("docker.io/library/app-%d:*", i)}
			m.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}
		}
		p.Spec.Rules = append(p.Spec.Rules, r)
	}
	return Source{Name: "bench", Origin: "bench", Policy: p}
}

// benchPods are the pods each benchmark evaluates: three containers, the labels a
// typical workload carries, and a namespace with the labels clusters typically set.
func benchPods(tb testing.TB) map[string]Facts {
	nsLabels := map[string]string{
		"kubernetes.io/metadata.name": "team-3-dev", "team": "t3", "env": "prod", "cost-center": "cc-4",
	}
	podLabels := map[string]string{
		"app": "web", "app.kubernetes.io/name": "web", "app.kubernetes.io/version": "1.4.2", "pod-template-hash": "7f9c8d",
	}
	match := Facts{Namespace: "team-3-dev", NamespaceLabels: nsLabels, PodLabels: podLabels,
		Images: images(tb, "registry.example.com/team-3/web:1.4.2", "docker.io/library/envoy:v1.30", "quay.io/org-7/agent:2")}
	miss := Facts{Namespace: "payments", PodLabels: podLabels,
		NamespaceLabels: map[string]string{"kubernetes.io/metadata.name": "payments", "team": "payments", "env": "staging"},
		Images:          images(tb, "registry.example.com/payments/ledger:2.0.1", "registry.example.com/payments/proxy:2.0.1", "gcr.io/distroless/static:nonroot")}
	return map[string]Facts{"match": match, "default": miss}
}

func BenchmarkEvaluate(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		snap, err := Compile(benchSource(n))
		if err != nil {
			b.Fatal(err)
		}
		pods := benchPods(b)
		for _, pod := range []string{"match", "default"} {
			f := pods[pod]
			b.Run(fmt.Sprintf("rules=%d/pod=%s", n, pod), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					snap.Evaluate(&f)
				}
			})
		}
	}
}

// BenchmarkMapLookup is a yardstick, not a part of isolator: one lookup in a map of
// 1,000 strings. On a shared machine whose speed varies, Evaluate's cost is best read
// as a multiple of it (docs/performance.md).
func BenchmarkMapLookup(b *testing.B) {
	m := map[string][]int32{}
	for i := range 1000 {
		m[fmt.Sprintf("team-%d", i)] = []int32{int32(i)}
	}
	key := "team-500"
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n += len(m[key])
	}
	if n == 0 {
		b.Fatal("lookup missed")
	}
}

func BenchmarkNormalizeImage(b *testing.B) {
	for _, ref := range []string{"nginx", "registry.example.com/team-3/web:1.4.2", "quay.io/org/agent:2@sha256:" + zeros} {
		b.Run(ref[:min(len(ref), 30)], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NormalizeImage(ref); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		s := benchSource(n)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Compile(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBenchPolicy keeps the benchmark honest: its policy is valid, its rules are the
// promised mix, and its pods take the decisions the benchmark names them after.
func TestBenchPolicy(t *testing.T) {
	snap, err := Compile(benchSource(1000))
	if err != nil {
		t.Fatal(err)
	}
	if snap.Len() != 1000 {
		t.Fatalf("Len() = %d", snap.Len())
	}
	pods := benchPods(t)
	match := pods["match"]
	d := snap.Evaluate(&match)
	if d.Action != ActionSet || d.Rule == "bench/defaultRuntimeClass" {
		t.Errorf("match pod: %+v", d)
	}
	miss := pods["default"]
	if d := snap.Evaluate(&miss); d.Rule != "bench/defaultRuntimeClass" || d.Action != ActionSet {
		t.Errorf("default pod: %+v", d)
	}
}
