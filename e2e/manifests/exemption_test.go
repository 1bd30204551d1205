//go:build e2e

package manifests

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

func runCommand(ctx context.Context, bin string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, bin, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), fmt.Errorf("%s %v: %w\n%s", bin, args, err, ee.Stderr)
		}
		return string(out), fmt.Errorf("%s %v: %w", bin, args, err)
	}
	return string(out), nil
}

// TestExemptionLabelsAreProtected: a user whom RBAC lets edit namespaces still can't
// set, change or remove isolator.dev/* labels; a cluster admin can.
func TestExemptionLabelsAreProtected(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := context.Background()
	mustApply(t, "-f", filepath.Join(manifestsDir(t), "base", "namespace-labels-policy.yaml"))
	admin := cp.Client()
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "namespace-editor"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "patch", "update"}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "namespace-editor-bob"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "namespace-editor"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "bob"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.CreateNamespace(ctx, "team-bob", map[string]string{"isolator.dev/trust": "untrusted", "team": "bob"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cp.UserConfig("bob", "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	patch := func(ctx context.Context, c kubernetes.Interface, labels string, dryRun bool) error {
		opts := metav1.PatchOptions{}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		_, err := c.CoreV1().Namespaces().Patch(ctx, "team-bob", types.MergePatchType, []byte(`{"metadata":{"labels":`+labels+`}}`), opts)
		return err
	}
	// Dry runs, so that nothing changes while the policy is still loading.
	eventually(t, "the policy to deny bob relabelling his namespace trusted", func(ctx context.Context) error {
		err := patch(ctx, bob, `{"isolator.dev/trust":"trusted"}`, true)
		if err == nil {
			return fmt.Errorf("allowed")
		}
		return checkDenied(err, "", "only cluster admins and isolator may set, change or remove isolator.dev/* labels")
	})
	for _, tc := range []struct {
		name, labels string
		wantDenied   bool
	}{
		{"removing the label", `{"isolator.dev/trust":null}`, true},
		{"adding an exemption label", `{"isolator.dev/exempt":"true"}`, true},
		{"changing another label", `{"team":"bobs"}`, false},
	} {
		t.Run("bob "+tc.name, func(t *testing.T) {
			err := patch(ctx, bob, tc.labels, true)
			if tc.wantDenied != (err != nil) {
				t.Errorf("denied = %v (%v), want %v", err != nil, err, tc.wantDenied)
			}
		})
	}
	if err := patch(ctx, admin, `{"isolator.dev/trust":"trusted"}`, false); err != nil {
		t.Fatalf("the cluster admin may not relabel: %v", err)
	}
	ns, err := admin.CoreV1().Namespaces().Get(ctx, "team-bob", metav1.GetOptions{})
	if err != nil || ns.Labels["isolator.dev/trust"] != "trusted" {
		t.Fatalf("namespace labels %v (%v), want isolator.dev/trust=trusted", ns.Labels, err)
	}
}

// TestExemptionLabelsAreProtectedOnSubresources: the apiserver keeps label changes sent
// through a namespace's status and finalize subresources, so a tenant whom RBAC allows
// only those could otherwise drop isolator.dev/trust=untrusted and get runc for its
// next pod. The label guard (a ValidatingAdmissionPolicy) refuses both; other labels
// still change through them, which shows that each path really writes labels.
func TestExemptionLabelsAreProtectedOnSubresources(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := context.Background()
	mustApply(t, "-f", filepath.Join(manifestsDir(t), "base", "namespace-labels-policy.yaml"))
	admin := cp.Client()
	if _, err := admin.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "namespace-subresource-writer"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"namespaces/status", "namespaces/finalize"}, Verbs: []string{"get", "patch", "update"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "namespace-subresource-writer-carol"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "namespace-subresource-writer"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "carol"}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const ns = "team-carol"
	if _, err := cp.CreateNamespace(ctx, ns, map[string]string{"isolator.dev/trust": "untrusted", "team": "carol"}); err != nil {
		t.Fatal(err)
	}
	cfg, err := cp.UserConfig("carol", "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	carol, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	patchStatus := func(ctx context.Context, labels string, dryRun bool) error {
		opts := metav1.PatchOptions{}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		_, err := carol.CoreV1().Namespaces().Patch(ctx, ns, types.MergePatchType, []byte(`{"metadata":{"labels":`+labels+`}}`), opts, "status")
		return err
	}
	finalize := func(ctx context.Context, edit func(map[string]string)) error {
		cur, err := carol.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			return err
		}
		edit(cur.Labels)
		_, err = carol.CoreV1().Namespaces().Finalize(ctx, cur, metav1.UpdateOptions{})
		return err
	}
	const guard = "ValidatingAdmissionPolicy 'isolator-namespace-labels'"
	denied := func(err error) error {
		if err == nil {
			return fmt.Errorf("allowed")
		}
		if !apierrors.IsForbidden(err) {
			return fmt.Errorf("refused, but not as Forbidden: %w", err)
		}
		if !strings.Contains(err.Error(), guard) || !strings.Contains(err.Error(), "only cluster admins and isolator may set, change or remove isolator.dev/* labels") {
			return fmt.Errorf("refused, but not by the label guard: %w", err)
		}
		return nil
	}
	eventually(t, "the label guard to cover namespaces/status", func(ctx context.Context) error {
		return denied(patchStatus(ctx, `{"isolator.dev/trust":null}`, true))
	})
	t.Run("status patch removing isolator.dev/trust", func(t *testing.T) {
		if err := denied(patchStatus(ctx, `{"isolator.dev/trust":null}`, false)); err != nil {
			t.Error(err)
		}
	})
	t.Run("finalize removing isolator.dev/trust", func(t *testing.T) {
		if err := denied(finalize(ctx, func(l map[string]string) { delete(l, "isolator.dev/trust") })); err != nil {
			t.Error(err)
		}
	})
	t.Run("finalize adding isolator.dev/exempt", func(t *testing.T) {
		if err := denied(finalize(ctx, func(l map[string]string) { l["isolator.dev/exempt"] = "true" })); err != nil {
			t.Error(err)
		}
	})
	// The same paths change other labels: without the guard, the isolator.dev/ label
	// would have gone the same way.
	if err := patchStatus(ctx, `{"team":"carol-status"}`, false); err != nil {
		t.Fatalf("status patch of another label: %v", err)
	}
	if err := finalize(ctx, func(l map[string]string) { l["stage"] = "finalize" }); err != nil {
		t.Fatalf("finalize with another label: %v", err)
	}
	got, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"isolator.dev/trust": "untrusted", "team": "carol-status", "stage": "finalize", "kubernetes.io/metadata.name": ns}
	if !maps.Equal(got.Labels, want) {
		t.Errorf("labels after the subresource writes = %v, want %v", got.Labels, want)
	}
}
