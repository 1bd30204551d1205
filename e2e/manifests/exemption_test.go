//go:build e2e

package manifests

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
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
