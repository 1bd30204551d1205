//go:build e2e

// Package bypass tries, against a real kube-apiserver and the real isolator webhook, every
// way REFERENCE.md lists (and those found since) to get a pod that the policy sends to a
// sandbox running without one. Each attempt must end with the pod running the required
// class or with a clear denial. docs/security.md maps each defence to its test here.
package bypass

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/isolator-dev/isolator/e2e/harness"
)

var (
	cp        *harness.ControlPlane
	iso       *harness.Isolator
	manifests string
	// tenant is a namespace admin of shop and tenant-acme who may also edit namespaces:
	// the attacker of these tests.
	tenant kubernetes.Interface
)

// localRegistryPolicy adds a rule for a private registry reached as localhost:5000.
const localRegistryPolicy = `apiVersion: v1
kind: ConfigMap
metadata:
  name: registries
  namespace: isolator-system
  labels:
    isolator.dev/policy: "true"
data:
  policy.yaml: |
    apiVersion: isolator.dev/v1alpha1
    kind: RuntimePolicy
    spec:
      runtimeClasses:
      - name: kata-rc
        sandboxed: true
      - name: runc-rc
      rules:
      - name: local-registry
        runtimeClass: kata-rc
        priority: 70
        match:
          anyImage: ["localhost:5000/**"]
      - name: untrusted-registries
        runtimeClass: kata-rc
        priority: 70
        match:
          anyImage: ["quay.io/untrusted/**", "ghcr.io:443/untrusted/**"]
`

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Options{}, &cp, setup))
}

func setup(ctx context.Context, c *harness.ControlPlane) error {
	var err error
	if iso, manifests, err = c.StartRegisteredIsolator(ctx, harness.IsolatorOptions{}); err != nil {
		return err
	}
	if err := c.Apply(ctx, "runtimeclasses", "base/namespace-labels-policy.yaml", "examples/policies.yaml"); err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, strings.NewReader(localRegistryPolicy), "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	for name, labels := range map[string]map[string]string{
		"shop":        {"isolator.dev/trust": "untrusted"},
		"payments":    {"isolator.dev/trust": "trusted"},
		"tenant-acme": nil,
	} {
		if _, err := c.CreateNamespace(ctx, name, labels); err != nil {
			return err
		}
	}
	if err := grantTenant(ctx, c); err != nil {
		return err
	}
	// Wait until the webhook has the whole policy (a local-registry image in a trusted
	// namespace is sandboxed) and the backstop has been generated from it.
	return harness.WaitFor(ctx, time.Minute, "the webhook policy and the backstop", func(ctx context.Context) (bool, error) {
		got, err := c.Client().CoreV1().Pods("payments").Create(ctx, pod("payments", "probe", "localhost:5000/tool:1"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || className(got) != "kata-rc" {
			return false, nil
		}
		vap, err := c.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "isolator-backstop", metav1.GetOptions{})
		return err == nil && strings.Contains(vap.Annotations["isolator.dev/policy-sources"], "registries"), nil
	})
}

// grantTenant gives the user tenant@example.com what a namespace owner typically has:
// pods, workloads and debug containers in shop and tenant-acme, and edit on namespaces.
func grantTenant(ctx context.Context, c *harness.ControlPlane) error {
	rbac := c.Client().RbacV1()
	cr := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods", "pods/ephemeralcontainers"}, Verbs: []string{"get", "list", "create", "update", "patch", "delete"}},
			{APIGroups: []string{"apps", "batch"}, Resources: []string{"deployments", "replicasets", "jobs", "cronjobs", "statefulsets"}, Verbs: []string{"get", "list", "create", "update", "patch", "delete"}},
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "create", "update", "patch"}},
		},
	}
	if _, err := rbac.ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "tenant"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "tenant@example.com"}},
	}
	if _, err := rbac.ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	cfg, err := c.UserConfig("tenant@example.com", "tenants")
	if err != nil {
		return err
	}
	tenant, err = kubernetes.NewForConfig(cfg)
	return err
}

func ptr[T any](v T) *T { return &v }

func pod(ns, name, image string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

func className(p *corev1.Pod) string {
	if p == nil || p.Spec.RuntimeClassName == nil {
		return ""
	}
	return *p.Spec.RuntimeClassName
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

var seq int

// attempt creates p as the tenant and returns the stored pod or the denial.
func attempt(t *testing.T, ctx context.Context, p *corev1.Pod) (*corev1.Pod, error) {
	t.Helper()
	seq++
	if p.Name == "" {
		p.Name = fmt.Sprintf("attempt-%d", seq)
	}
	got, err := tenant.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err == nil {
		t.Cleanup(func() {
			_ = cp.Client().CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		})
	}
	return got, err
}

// defence names what stopped an attempt. The apiserver's answer tells them apart:
// each admission plugin, RBAC and validation word their refusals their own way.
type defence string

const (
	byWebhook    defence = "the isolator webhook"
	byBackstop   defence = "the backstop ValidatingAdmissionPolicy"
	byLabelGuard defence = "the namespace label guard"
	byRBAC       defence = "RBAC"
	byValidation defence = "apiserver validation"
)

var rbacRefusal = regexp.MustCompile(`is forbidden: User ".*" cannot [a-z]+ resource`)

// defenceOf tells which defence refused a request, from its status and message.
func defenceOf(err error) (defence, bool) {
	msg := err.Error()
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(msg, `admission webhook "pods.isolator.dev" denied the request: isolator: `):
		return byWebhook, true
	case apierrors.IsForbidden(err) && strings.Contains(msg, "ValidatingAdmissionPolicy 'isolator-backstop' with binding 'isolator-backstop' denied request"):
		return byBackstop, true
	case apierrors.IsForbidden(err) && strings.Contains(msg, "ValidatingAdmissionPolicy 'isolator-namespace-labels' with binding 'isolator-namespace-labels' denied request"):
		return byLabelGuard, true
	case apierrors.IsForbidden(err) && rbacRefusal.MatchString(msg):
		return byRBAC, true
	case apierrors.IsInvalid(err):
		return byValidation, true
	}
	return "", false
}

// refusedBy asserts that the attempt was refused by want, and that the refusal says
// each of mentions (the rule, the class required, ...). It logs the defence.
func refusedBy(t *testing.T, what string, err error, want defence, mentions ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: admitted; want a refusal by %s", what, want)
		return
	}
	got, ok := defenceOf(err)
	switch {
	case !ok:
		t.Errorf("%s: failed, but not with a refusal by any defence: %v", what, err)
		return
	case got != want:
		t.Errorf("%s: refused by %s; want %s: %v", what, got, want, err)
		return
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("%s: the refusal by %s does not say %q: %v", what, got, m, err)
		}
	}
	t.Logf("%s: refused by %s: %v", what, got, err)
}

// admittedWith asserts that the attempt was admitted with runtime class want ("" for
// none).
func admittedWith(t *testing.T, what string, got *corev1.Pod, err error, want string) {
	t.Helper()
	if err != nil {
		d, _ := defenceOf(err)
		t.Errorf("%s: refused (by %q); want admitted with %q: %v", what, d, want, err)
		return
	}
	if c := className(got); c != want {
		t.Errorf("%s: admitted with runtimeClassName %q; want %q", what, c, want)
		return
	}
	t.Logf("%s: admitted with %q", what, want)
}
