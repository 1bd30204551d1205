//go:build e2e

package admission

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/webhook"
)

const ciPolicy = `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses:
  - name: kata-rc
    sandboxed: true
  - name: runc-rc
  rules:
  - name: ci-runners
    runtimeClass: kata-rc
    priority: 200
    match:
      podSelector:
        matchExpressions:
        - {key: app, operator: In, values: [ci-runner, build-agent]}
  - name: quay-images
    runtimeClass: kata-rc
    mode: Audit
    match:
      anyImage: ["quay.io/**"]
%s`

const plainRule = `  - name: plain-namespace
    runtimeClass: kata-rc
    priority: 300
    match:
      namespaces: [plain]
`

func updateCI(t *testing.T, ctx context.Context, text string) error {
	t.Helper()
	cm, err := cp.Client().CoreV1().ConfigMaps(harness.IsolatorNamespace).Get(ctx, "ci", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["policy.yaml"] = text
	_, err = cp.Client().CoreV1().ConfigMaps(harness.IsolatorNamespace).Update(ctx, cm, metav1.UpdateOptions{})
	return err
}

// dryRunClass asks the apiserver what a new pod would get, without storing it.
func dryRunClass(ctx context.Context, p *corev1.Pod) (string, error) {
	got, err := cp.Client().CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return "", err
	}
	return class(got), nil
}

// h. Hot reload: a ConfigMap update applies to the next pods within 2 s; an invalid
// ConfigMap is refused at apply time with field paths; one forced in past the validator
// leaves the last good rules in force and raises an Event and a metric.
func TestHotReload(t *testing.T) {
	ctx := testContext(t)
	t.Cleanup(func() {
		ctx := context.Background()
		if err := updateCI(t, ctx, fmt.Sprintf(ciPolicy, "")); err != nil {
			t.Errorf("restoring the ci policy: %v", err)
		}
		if err := waitRules(ctx, 6); err != nil {
			t.Error(err)
		}
		// The backstop follows the webhook through the apiserver's informer: wait
		// until the relaxed policy is in force there too.
		err := harness.WaitFor(ctx, 30*time.Second, "the backstop to drop the removed rule", func(ctx context.Context) (bool, error) {
			got, err := dryRunClass(ctx, newPod("plain", "probe", "registry.example.com/team/svc:1"))
			return got == "runc-rc", err
		})
		if err != nil {
			t.Error(err)
		}
	})
	probe := newPod("plain", "probe", "registry.example.com/team/svc:1")
	if got, err := dryRunClass(ctx, probe); err != nil || got != "runc-rc" {
		t.Fatalf("before the update: class %q, err %v; want runc-rc", got, err)
	}

	start := time.Now()
	if err := updateCI(t, ctx, fmt.Sprintf(ciPolicy, plainRule)); err != nil {
		t.Fatal(err)
	}
	err := harness.WaitFor(ctx, 2*time.Second, "the updated rule to apply", func(ctx context.Context) (bool, error) {
		got, err := dryRunClass(ctx, probe)
		return got == "kata-rc", err
	})
	if err != nil {
		t.Fatalf("the policy update did not apply within 2s: %v", err)
	}
	t.Logf("policy update applied to new pods after %v", time.Since(start).Round(time.Millisecond))
	p := mustCreate(t, ctx, newPod("plain", "after-update", "registry.example.com/team/svc:1"))
	expectDecision(t, p, "kata-rc", "ci/plain-namespace")

	// An invalid policy is refused at apply time, with the same field paths as
	// `isolator policy validate`.
	bad := fmt.Sprintf(ciPolicy, "  - name: Bad_Name\n    runtimeClass: kata\n    match: {}\n")
	err = updateCI(t, ctx, bad)
	if err == nil {
		t.Fatal("an invalid policy ConfigMap was accepted")
	}
	for _, want := range []string{"data[policy.yaml].spec.rules[2].name", "data[policy.yaml].spec.rules[2].runtimeClass", "data[policy.yaml].spec.rules[2].match"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal does not name %s:\n%v", want, err)
		}
	}
	out, err := cp.Kubectl(ctx, strings.NewReader(configMapYAML("ci", bad)), "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "spec.rules[2].runtimeClass") {
		t.Errorf("kubectl apply of an invalid policy: err %v, output:\n%s", err, out)
	}

	// Forced in past the validator (its configuration deleted for a moment), the bad
	// version changes nothing: the last good rules stay in force.
	vwc := cp.Client().AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if err := vwc.Delete(ctx, "isolator", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, 10*time.Second, "the validator to be gone", func(ctx context.Context) (bool, error) {
		return updateCI(t, ctx, bad) == nil, nil
	})
	if regErr := iso.Register(ctx, cp.Client(), filepath.Join(manifests, "base")); regErr != nil {
		t.Fatal(regErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	err = harness.WaitFor(ctx, 10*time.Second, "the invalid ConfigMap to be reported", func(ctx context.Context) (bool, error) {
		v, err := metric(ctx, `isolator_policy_configmaps{state="invalid"}`)
		return v == 1, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := dryRunClass(ctx, probe); err != nil || got != "kata-rc" {
		t.Errorf("after an invalid update: class %q, err %v; want kata-rc from the last good version", got, err)
	}
	err = harness.WaitFor(ctx, 10*time.Second, "a PolicyInvalid Event on the ConfigMap", func(ctx context.Context) (bool, error) {
		evs, err := cp.Client().EventsV1().Events(harness.IsolatorNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.Reason == webhook.ReasonPolicyInvalid && e.Regarding.Name == "ci" && e.Regarding.Kind == "ConfigMap" &&
				strings.Contains(e.Note, "last good version stays in force") && strings.Contains(e.Note, "spec.rules[2]") {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Error(err)
	}
}

func configMapYAML(name, policy string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s\n  namespace: %s\n  labels:\n    isolator.dev/policy: \"true\"\ndata:\n  policy.yaml: |\n", name, harness.IsolatorNamespace)
	for _, line := range strings.Split(strings.TrimRight(policy, "\n"), "\n") {
		b.WriteString("    " + line + "\n")
	}
	return b.String()
}

// The webhook reads a namespace it has not seen yet from the apiserver.
func TestNamespaceLookupLive(t *testing.T) {
	ctx := testContext(t)
	if _, err := cp.CreateNamespace(ctx, "live-lookup", map[string]string{"isolator.dev/trust": "untrusted"}); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cp.RESTConfig(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ix := webhook.NewMetaIndex(schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}, c)
	labels, found, err := ix.Labels(ctx, "live-lookup")
	if err != nil || !found || labels["isolator.dev/trust"] != "untrusted" || labels["kubernetes.io/metadata.name"] != "live-lookup" {
		t.Errorf("live lookup: labels %v found %v err %v", labels, found, err)
	}
	if _, ok := ix.Cached("live-lookup"); !ok {
		t.Error("a live lookup was not kept for the next admission")
	}
	if _, found, err := ix.Labels(ctx, "never-created"); found || err != nil {
		t.Errorf("missing namespace: found %v err %v, want not found", found, err)
	}
}

// j. The decision counters at /metrics match the pods created.
func TestMetricsMatchPods(t *testing.T) {
	ctx := testContext(t)
	if _, err := cp.CreateNamespace(ctx, "counted", map[string]string{"isolator.dev/trust": "untrusted"}); err != nil {
		t.Fatal(err)
	}
	before, err := metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const n = 7
	for i := range n {
		mustCreate(t, ctx, newPod("counted", fmt.Sprintf("p-%d", i), "registry.example.com/shop/web:1"))
	}
	hostNet := newPod("counted", "hostnet", "registry.example.com/shop/web:1")
	hostNet.Spec.HostNetwork = true
	if _, err := create(t, ctx, cp.Client(), hostNet); err == nil {
		t.Fatal("hostNetwork pod admitted")
	}
	audited := mustCreate(t, ctx, newPod("counted", "audited", "quay.io/acme/tool:1"))
	expectDecision(t, audited, "kata-rc", "platform/untrusted-namespaces")
	after, err := metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]float64{
		`isolator_admission_decisions_total{action="set",rule="platform/untrusted-namespaces",runtime_class="kata-rc"}`:  n + 1,
		`isolator_admission_decisions_total{action="deny",rule="platform/untrusted-namespaces",runtime_class="kata-rc"}`: 1,
		`isolator_admission_audit_total{action="set",rule="ci/quay-images",runtime_class="kata-rc"}`:                     1,
	} {
		if got := after[key] - before[key]; got != want {
			t.Errorf("%s grew by %v, want %v", key, got, want)
		}
	}
	if after["isolator_policy_rules"] != 6 {
		t.Errorf("isolator_policy_rules = %v, want 6", after["isolator_policy_rules"])
	}
	if after[`isolator_policy_configmaps{state="valid"}`] < 2 {
		t.Errorf("valid policy ConfigMaps = %v, want 2", after[`isolator_policy_configmaps{state="valid"}`])
	}
}
