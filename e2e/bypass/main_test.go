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

func className(p *corev1.Pod) string { return harness.ClassOf(p) }

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

// The defences, as the harness tells them apart.
const (
	byWebhook    = harness.ByWebhook
	byBackstop   = harness.ByBackstop
	byLabelGuard = harness.ByLabelGuard
	byValidation = harness.ByValidation
)

var (
	refusedBy    = harness.RefusedBy
	admittedWith = harness.AdmittedWith
)
