//go:build e2e

// Package coexistence runs isolator through a real kube-apiserver on a cluster that
// already has other runtime classes (NVIDIA's, kata-deploy's) and teams that write their
// own policies: isolation tiers, classes no policy lists, team policies that can only
// tighten, and the backstop's agreement with the webhook on each.
package coexistence

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/isolator-dev/isolator/e2e/harness"
)

var (
	cp        *harness.ControlPlane
	iso       *harness.Isolator
	manifests string
	// teamA may edit ConfigMaps and create pods in tenant-a, and nothing else: the
	// RBAC a platform grants a team to write its own policy.
	teamA kubernetes.Interface
)

// platform is the cluster policy: a GPU cluster with kata-deploy's classes.
const platform = `apiVersion: v1
kind: ConfigMap
metadata:
  name: platform
  namespace: isolator-system
  labels:
    isolator.dev/policy: "true"
data:
  policy.yaml: |
    apiVersion: isolator.dev/v1alpha2
    kind: RuntimePolicy
    spec:
      runtimeClasses:
      - {name: kata-rc, isolation: VM}
      - {name: kata-clh, isolation: VM}
      - {name: runc-rc, isolation: Container}
      - {name: nvidia, isolation: Container}
      defaultRuntimeClass: runc-rc
      rules:
      - name: untrusted
        runtimeClass: kata-rc
        priority: 100
        match:
          namespaceSelector: {matchLabels: {isolator.dev/trust: untrusted}}
        exclude:
        - {namespaces: [shop], serviceAccountNames: [platform-agent]}
`

// teamPolicy is tenant-a's own policy: its pods from quay.io run in Kata.
const teamPolicy = `apiVersion: v1
kind: ConfigMap
metadata:
  name: team
  namespace: tenant-a
  labels:
    isolator.dev/policy: "true"
data:
  policy.yaml: |
    apiVersion: isolator.dev/v1alpha2
    kind: RuntimePolicy
    spec:
      runtimeClasses: [{name: kata-rc, isolation: VM}, {name: runc-rc, isolation: Container}]
      rules:
      - name: quay-images
        runtimeClass: kata-rc
        match: {anyImage: ["quay.io/**"]}
`

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Options{}, &cp, setup))
}

func setup(ctx context.Context, c *harness.ControlPlane) error {
	var err error
	if iso, manifests, err = c.StartRegisteredIsolator(ctx, harness.IsolatorOptions{}); err != nil {
		return err
	}
	if err := c.Apply(ctx, "base/namespace-labels-policy.yaml"); err != nil {
		return err
	}
	for _, rc := range []struct{ name, handler string }{{"kata-rc", "kata"}, {"kata-clh", "kata-clh"}, {"runc-rc", "runc"}, {"nvidia", "nvidia"}, {"wasmtime", "wasmtime"}} {
		if _, err := c.Client().NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: rc.name}, Handler: rc.handler}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if _, err := c.Kubectl(ctx, strings.NewReader(platform), "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	for name, labels := range map[string]map[string]string{
		"ml": nil, "shop": {"isolator.dev/trust": "untrusted"}, "tenant-a": nil, "tenant-b": nil,
	} {
		if _, err := c.CreateNamespace(ctx, name, labels); err != nil {
			return err
		}
	}
	if err := grantTeam(ctx, c); err != nil {
		return err
	}
	return harness.WaitFor(ctx, time.Minute, "the platform policy and its backstop", func(ctx context.Context) (bool, error) {
		got, err := c.Client().CoreV1().Pods("shop").Create(ctx, pod("shop", "probe", "nginx", ""), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || harness.ClassOf(got) != "kata-rc" {
			return false, nil
		}
		vap, err := c.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "isolator-backstop", metav1.GetOptions{})
		return err == nil && vap.Annotations["isolator.dev/policy-sources"] == "platform", nil
	})
}

// grantTeam gives team-a@example.com what a platform grants a team that writes its own
// policy: ConfigMaps and pods in tenant-a, nothing cluster-wide.
func grantTeam(ctx context.Context, c *harness.ControlPlane) error {
	rbac := c.Client().RbacV1()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: "tenant-a"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps", "pods"}, Verbs: []string{"get", "list", "create", "update", "patch", "delete"}},
		},
	}
	if _, err := rbac.Roles("tenant-a").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return err
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "team", Namespace: "tenant-a"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "team"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "team-a@example.com"}},
	}
	if _, err := rbac.RoleBindings("tenant-a").Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		return err
	}
	cfg, err := c.UserConfig("team-a@example.com", "teams")
	if err != nil {
		return err
	}
	teamA, err = kubernetes.NewForConfig(cfg)
	return err
}

func pod(ns, name, image, class string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
	if class != "" {
		p.Spec.RuntimeClassName = &class
	}
	return p
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var dryRun = metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}

// create creates p as the cluster admin, dry run: admission decides, nothing is stored.
func create(ctx context.Context, p *corev1.Pod) (*corev1.Pod, error) {
	return cp.Client().CoreV1().Pods(p.Namespace).Create(ctx, p, dryRun)
}

// decidedBy is the rule isolator's annotation names on an admitted pod.
func decidedBy(t *testing.T, what string, got *corev1.Pod, rule string) {
	t.Helper()
	if got != nil && got.Annotations["isolator.dev/rule"] != rule && rule != "" {
		t.Errorf("%s: decided by %q, want %s", what, got.Annotations["isolator.dev/rule"], rule)
	}
}

// manifestsBase is where the webhook configurations come from.
func manifestsBase() string { return filepath.Join(manifests, "base") }
