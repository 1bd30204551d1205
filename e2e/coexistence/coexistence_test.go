//go:build e2e

package coexistence

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// Classes of one isolation tier are equivalent, and a class no policy lists counts as a
// Container class: a GPU pod keeps nvidia where runc-rc is the default, kata-deploy's
// kata-clh is kept where kata-rc is required, and neither a Container class nor an
// unknown one passes where a VM is.
func TestIsolationTiers(t *testing.T) {
	ctx := testContext(t)
	for _, c := range []struct {
		what, ns, image, class, want, rule string
	}{
		{"the GPU pod keeps nvidia", "ml", "nvcr.io/nvidia/pytorch:24.01-py3", "nvidia", "nvidia", "platform/defaultRuntimeClass"},
		{"a class no policy lists is kept where no sandbox is required", "ml", "ghcr.io/acme/app:1", "wasmtime", "wasmtime", "platform/defaultRuntimeClass"},
		{"kata-clh is kept where kata-rc is required", "shop", "nginx", "kata-clh", "kata-clh", "platform/untrusted"},
		{"a pod naming no class gets kata-rc", "shop", "nginx", "", "kata-rc", "platform/untrusted"},
		{"an exception: the platform's agent in shop", "shop", "nginx", "", "runc-rc", "platform/defaultRuntimeClass"},
	} {
		p := pod(c.ns, "tiers", c.image, c.class)
		if strings.HasPrefix(c.what, "an exception") {
			p.Spec.ServiceAccountName = "platform-agent"
			sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "platform-agent", Namespace: "shop"}}
			if _, err := cp.Client().CoreV1().ServiceAccounts("shop").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		got, err := create(ctx, p)
		harness.AdmittedWith(t, c.what, got, err, c.want)
		if c.class != c.want || c.class == "" {
			decidedBy(t, c.what, got, c.rule)
		}
	}
	for _, c := range []struct{ what, class string }{{"nvidia where a VM is required", "nvidia"}, {"an unknown class where a VM is required", "wasmtime"}} {
		_, err := create(ctx, pod("shop", "tiers", "nginx", c.class))
		harness.RefusedBy(t, c.what, err, harness.ByWebhook, "rule platform/untrusted", c.class, "kata-rc, kata-clh")
	}
}

// A team's own policy in tenant-a moves tenant-a's quay.io pods to kata-rc. It reaches
// no other namespace, and it can't make any pod less isolated than the cluster policy
// decides.
func TestTeamPolicy(t *testing.T) {
	ctx := testContext(t)
	out, err := kubectlAs(ctx, teamPolicy, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("the team could not apply its policy: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().ConfigMaps("tenant-a").Delete(context.Background(), "team", metav1.DeleteOptions{})
	})
	waitClass(t, ctx, pod("tenant-a", "probe", "quay.io/acme/x:1", ""), "kata-rc")
	got, err := teamA.CoreV1().Pods("tenant-a").Create(ctx, pod("tenant-a", "quay", "quay.io/acme/x:1", ""), dryRun)
	harness.AdmittedWith(t, "a tenant-a pod from quay.io", got, err, "kata-rc")
	decidedBy(t, "a tenant-a pod from quay.io", got, "tenant-a/team/quay-images")
	_, err = teamA.CoreV1().Pods("tenant-a").Create(ctx, pod("tenant-a", "quay", "quay.io/acme/x:1", "runc-rc"), dryRun)
	harness.RefusedBy(t, "a tenant-a pod from quay.io naming runc-rc", err, harness.ByWebhook, "rule tenant-a/team/quay-images", "runc-rc")
	got, err = create(ctx, pod("tenant-b", "quay", "quay.io/acme/x:1", ""))
	harness.AdmittedWith(t, "a tenant-b pod from quay.io", got, err, "runc-rc")
	decidedBy(t, "a tenant-b pod from quay.io", got, "platform/defaultRuntimeClass")
}

// A team can't use its policy to weaken the cluster's, to reach another namespace, or
// to exempt its own pods.
func TestTeamPolicyBypasses(t *testing.T) {
	ctx := testContext(t)
	if _, err := cp.Client().CoreV1().Namespaces().Patch(ctx, "tenant-a", types.MergePatchType,
		[]byte(`{"metadata":{"labels":{"isolator.dev/trust":"untrusted"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cp.Client().CoreV1().Namespaces().Patch(context.Background(), "tenant-a", types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"isolator.dev/trust":null}}}`), metav1.PatchOptions{})
	})
	waitClass(t, ctx, pod("tenant-a", "probe", "ghcr.io/acme/x:1", ""), "kata-rc")

	// Weaken: everything of the team's on runc-rc, exemption label or not. Applied, with
	// a warning naming the cluster rule it can't override; the pods stay in kata-rc.
	loosen := strings.Replace(teamPolicy, `      - name: quay-images
        runtimeClass: kata-rc
        match: {anyImage: ["quay.io/**"]}`, `      - name: exempt-me
        runtimeClass: runc-rc
        priority: 1000
        match: {podSelector: {}}`, 1)
	out, err := kubectlAs(ctx, loosen, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("applying a loosening team policy: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().ConfigMaps("tenant-a").Delete(context.Background(), "team", metav1.DeleteOptions{})
	})
	if !strings.Contains(out, "can't weaken") || !strings.Contains(out, "cluster rule platform/untrusted (kata-rc)") {
		t.Errorf("no warning names the cluster rule the team can't override:\n%s", out)
	}
	time.Sleep(2 * time.Second) // the webhook reloads in milliseconds; give it ample time
	for _, c := range []struct{ what, class string }{{"a tenant-a pod naming no class", ""}, {"a tenant-a pod naming runc-rc", "runc-rc"}} {
		p := pod("tenant-a", "exempt", "ghcr.io/acme/x:1", c.class)
		p.Labels = map[string]string{"exempt": "yes"}
		got, err := teamA.CoreV1().Pods("tenant-a").Create(ctx, p, dryRun)
		if c.class == "" {
			harness.AdmittedWith(t, c.what+" under the loosening team policy", got, err, "kata-rc")
			decidedBy(t, c.what, got, "platform/untrusted")
		} else {
			harness.RefusedBy(t, c.what+" under the loosening team policy", err, harness.ByWebhook, "rule platform/untrusted")
		}
	}

	// Reach another namespace, re-tier a class, set the unknown-class rule: refused at
	// apply, naming the field.
	for _, c := range []struct{ what, from, to, says string }{
		{"a rule on another namespace", `match: {anyImage: ["quay.io/**"]}`, `match: {namespaces: [tenant-b], anyImage: ["quay.io/**"]}`,
			"spec.rules[0].match.namespaces: Forbidden: a team policy applies to the pods of its own namespace (tenant-a) only"},
		{"runc-rc re-tiered as a VM", `{name: runc-rc, isolation: Container}`, `{name: runc-rc, isolation: VM}`,
			"the cluster policies give runc-rc isolation Container, and a team policy can't change it"},
		{"unknown classes allowed", "      rules:", "      unknownRuntimeClasses: Container\n      rules:", "spec.unknownRuntimeClasses: Forbidden"},
	} {
		out, err := kubectlAs(ctx, strings.Replace(teamPolicy, c.from, c.to, 1), "apply", "--dry-run=server", "-f", "-")
		if err == nil || !strings.Contains(out, `admission webhook "policies.isolator.dev" denied the request`) || !strings.Contains(out, c.says) {
			t.Errorf("%s: want a refusal by the policy validator saying %q; got %v:\n%s", c.what, c.says, err, out)
		} else {
			t.Logf("%s: refused by %s", c.what, harness.ByPolicyWebhook)
		}
	}
	// Write a cluster policy: RBAC.
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "team-a-wins", Namespace: "isolator-system", Labels: map[string]string{"isolator.dev/policy": "true"}}}
	_, err = teamA.CoreV1().ConfigMaps("isolator-system").Create(ctx, cm, metav1.CreateOptions{})
	harness.RefusedBy(t, "a team writing a cluster policy", err, harness.ByRBAC, `cannot create resource "configmaps"`)
}

// The backstop agrees: with the webhook down, a tenant-a quay.io pod without kata-rc is
// refused in the team rule's name, a tenant-b one is not, and the tier decisions hold.
func TestBackstopAgrees(t *testing.T) {
	ctx := testContext(t)
	if out, err := kubectlAs(ctx, teamPolicy, "apply", "-f", "-"); err != nil {
		t.Fatalf("applying the team policy: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().ConfigMaps("tenant-a").Delete(context.Background(), "team", metav1.DeleteOptions{})
	})
	err := harness.WaitFor(ctx, time.Minute, "the backstop to take up the team policy", func(ctx context.Context) (bool, error) {
		vap, err := cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "isolator-backstop", metav1.GetOptions{})
		return err == nil && strings.Contains(vap.Annotations["isolator.dev/policy-sources"], "tenant-a/team"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	_ = l.Close()
	if err := harness.RegisterWebhooks(ctx, cp.Client(), manifestsBase(), "https://"+closed, iso.CABundle); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = harness.RegisterWebhooks(context.Background(), cp.Client(), manifestsBase(), iso.URL, iso.CABundle)
	})
	if err := harness.WaitFor(ctx, 30*time.Second, "the apiserver to fail open to the closed port", func(ctx context.Context) (bool, error) {
		got, err := create(ctx, pod("ml", "probe", "ghcr.io/acme/x:1", ""))
		return err == nil && harness.ClassOf(got) == "", err
	}); err != nil {
		t.Fatal(err)
	}
	// The apiserver takes up a changed ValidatingAdmissionPolicy through its informer,
	// a moment after the object changed: wait until the team rule is in force.
	if err := harness.WaitFor(ctx, 30*time.Second, "the apiserver to enforce the team rule in the backstop", func(ctx context.Context) (bool, error) {
		_, err := create(ctx, pod("tenant-a", "probe", "quay.io/acme/x:1", "runc-rc"))
		return err != nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	_, err = create(ctx, pod("tenant-a", "down", "quay.io/acme/x:1", ""))
	harness.RefusedBy(t, "tenant-a quay.io pod, no class", err, harness.ByBackstop, "isolator team rule tenant-a/team/quay-images", "must run in runtime class kata-rc")
	_, err = create(ctx, pod("tenant-a", "down", "quay.io/acme/x:1", "runc-rc"))
	harness.RefusedBy(t, "tenant-a quay.io pod naming runc-rc", err, harness.ByBackstop, "isolator team rule tenant-a/team/quay-images")
	got, err := create(ctx, pod("tenant-a", "down", "quay.io/acme/x:1", "kata-clh"))
	harness.AdmittedWith(t, "tenant-a quay.io pod naming kata-clh", got, err, "kata-clh")
	got, err = create(ctx, pod("tenant-b", "down", "quay.io/acme/x:1", ""))
	harness.AdmittedWith(t, "tenant-b quay.io pod", got, err, "")
	got, err = create(ctx, pod("ml", "down", "nvcr.io/nvidia/pytorch:24.01-py3", "nvidia"))
	harness.AdmittedWith(t, "the GPU pod", got, err, "nvidia")
	_, err = create(ctx, pod("shop", "down", "nginx", "nvidia"))
	harness.RefusedBy(t, "nvidia where a VM is required", err, harness.ByBackstop, "isolator rule platform/untrusted")
	got, err = create(ctx, pod("shop", "down", "nginx", "kata-clh"))
	harness.AdmittedWith(t, "kata-clh where kata-rc is required", got, err, "kata-clh")
}

// waitClass waits until a dry run of p gets class: the webhook has the policy in force.
func waitClass(t *testing.T, ctx context.Context, p *corev1.Pod, class string) {
	t.Helper()
	var last string
	err := harness.WaitFor(ctx, 30*time.Second, "pod "+p.Namespace+"/"+p.Name+" to get "+class, func(ctx context.Context) (bool, error) {
		got, err := create(ctx, p)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		last = harness.ClassOf(got)
		return last == class, nil
	})
	if err != nil {
		t.Fatalf("%v (last: %s)", err, last)
	}
}

// kubectlAs runs kubectl as team-a@example.com with stdin.
func kubectlAs(ctx context.Context, stdin string, args ...string) (string, error) {
	kubeconfig, err := cp.UserKubeconfig("team-a@example.com", "teams")
	if err != nil {
		return "", err
	}
	return cp.Kubectl(ctx, strings.NewReader(stdin), append([]string{"--kubeconfig", kubeconfig}, args...)...)
}
