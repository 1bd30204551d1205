//go:build e2e

package manifests

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// TestNodeAgentChangesOnlyItsOwnNode: isolator-node's service account, with a token
// bound to a pod on node-a as the DaemonSet's pods get, may set its label and lift its
// taint on node-a, and nothing else.
func TestNodeAgentChangesOnlyItsOwnNode(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := context.Background()
	admin := cp.Client()
	if _, err := cp.CreateNamespace(ctx, harness.IsolatorNamespace, nil); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(manifestsDir(t), "node")
	mustApply(t, "-f", filepath.Join(node, "rbac.yaml"), "-f", filepath.Join(node, "node-labels-policy.yaml"))
	for _, name := range []string{"node-a", "node-b"} {
		if _, err := admin.CoreV1().Nodes().Create(ctx, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"isolator.dev/kata": "enabled", "isolator.dev/kata-runtime": "false"}},
			Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "isolator.dev/kata-not-ready", Effect: corev1.TaintEffectNoSchedule}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = admin.CoreV1().Nodes().Delete(context.Background(), name, metav1.DeleteOptions{}) })
	}
	agent := agentClient(t, ctx, "node-a")

	label := func(ctx context.Context, node, key, value string, dryRun bool) error {
		opts := metav1.PatchOptions{}
		if dryRun {
			opts.DryRun = []string{metav1.DryRunAll}
		}
		_, err := agent.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, fmt.Appendf(nil, `{"metadata":{"labels":{%q:%q}}}`, key, value), opts)
		return err
	}
	eventually(t, "the policy to keep isolator-node off other nodes", func(ctx context.Context) error {
		err := label(ctx, "node-b", "isolator.dev/kata-runtime", "true", true)
		if err == nil {
			return fmt.Errorf("allowed")
		}
		return checkDenied(err, "", "isolator-node may only change the Node it runs on (node-a), not node-b")
	})
	if err := label(ctx, "node-a", "isolator.dev/kata", "disabled", true); err == nil {
		t.Error("isolator-node changed the admin's opt-in label")
	} else if err := checkDenied(err, "", "may only change the label isolator.dev/kata-runtime"); err != nil {
		t.Error(err)
	}
	if err := label(ctx, "node-a", "isolator.dev/kata-runtime", "true", false); err != nil {
		t.Fatalf("isolator-node can't mark its own node ready: %v", err)
	}
	// Lifting the startup taint, as the bootstrapper does: get, drop that one taint, and
	// patch with the resourceVersion read. The node lifecycle controller adds taints of
	// its own to these kubelet-less nodes; removing one of those would be refused.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		return patchNode(ctx, agent, "node-a", false, func(n *corev1.Node) {
			n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == "isolator.dev/kata-not-ready" })
		})
	})
	if err != nil {
		t.Fatalf("isolator-node can't lift its startup taint: %v", err)
	}
	got, err := admin.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["isolator.dev/kata-runtime"] != "true" || slices.ContainsFunc(got.Spec.Taints, func(t corev1.Taint) bool { return t.Key == "isolator.dev/kata-not-ready" }) {
		t.Errorf("node-a: labels %v, taints %v; want isolator.dev/kata-runtime=true and no isolator.dev/kata-not-ready", got.Labels, got.Spec.Taints)
	}
	for _, tc := range []struct {
		name, denial string
		change       func(*corev1.Node)
	}{
		{"adds a taint that is not its own", "may only add or remove the taint isolator.dev/kata-not-ready", func(n *corev1.Node) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "example.com/other", Effect: corev1.TaintEffectNoSchedule})
		}},
		{"cordons its node", "may not cordon or uncordon nodes", func(n *corev1.Node) { n.Spec.Unschedulable = true }},
		{"changes another annotation", "may only change isolator.dev/* annotations", func(n *corev1.Node) {
			n.Annotations = map[string]string{"example.com/owner": "me"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				return patchNode(ctx, agent, "node-a", true, tc.change)
			})
			if err == nil {
				t.Fatal("allowed")
			}
			if err := checkDenied(err, "", tc.denial); err != nil {
				t.Error(err)
			}
		})
	}
}

// patchNode reads the node, changes it and writes back the changed taints, labels,
// annotations and unschedulable flag with a merge patch that carries the
// resourceVersion read (so a concurrent change is a conflict, as for an update).
func patchNode(ctx context.Context, c kubernetes.Interface, name string, dryRun bool, change func(*corev1.Node)) error {
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	change(n)
	taints := n.Spec.Taints
	if taints == nil {
		taints = []corev1.Taint{}
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": n.ResourceVersion, "labels": n.Labels, "annotations": n.Annotations},
		"spec":     map[string]any{"taints": taints, "unschedulable": n.Spec.Unschedulable},
	})
	if err != nil {
		return err
	}
	opts := metav1.PatchOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = c.CoreV1().Nodes().Patch(ctx, name, types.MergePatchType, patch, opts)
	return err
}

// agentClient authenticates as isolator-node's service account with a token bound to a
// pod on nodeName: the apiserver puts the node's name into the token's user info.
func agentClient(t *testing.T, ctx context.Context, nodeName string) kubernetes.Interface {
	t.Helper()
	admin := cp.Client()
	pod, err := admin.CoreV1().Pods(harness.IsolatorNamespace).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "isolator-node-" + nodeName},
		Spec: corev1.PodSpec{
			ServiceAccountName: "isolator-node",
			NodeName:           nodeName,
			Containers:         []corev1.Container{{Name: "node", Image: "isolator-node:dev"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := admin.CoreV1().ServiceAccounts(harness.IsolatorNamespace).CreateToken(ctx, "isolator-node", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(cp.RESTConfig())
	cfg.BearerToken = tr.Status.Token
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
