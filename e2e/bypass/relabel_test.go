//go:build e2e

package bypass

import (
	"context"
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

func labelPatch(labels map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"labels": labels}})
	return b
}

// 5. A tenant who may edit namespaces relabels theirs into a trusted scope, removes the
// label the sandbox keys on, or creates a new namespace that claims to be trusted.
// Only cluster admins and isolator may touch isolator.dev/* namespace labels.
func TestNamespaceRelabelling(t *testing.T) {
	ctx := testContext(t)
	nss := tenant.CoreV1().Namespaces()
	for what, patch := range map[string][]byte{
		"relabel to trusted":    labelPatch(map[string]any{"isolator.dev/trust": "trusted"}),
		"remove the label":      labelPatch(map[string]any{"isolator.dev/trust": nil}),
		"add an isolator label": labelPatch(map[string]any{"isolator.dev/exempt": "true"}),
	} {
		_, err := nss.Patch(ctx, "shop", types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		refusedBy(t, what, err, byLabelGuard, "only cluster admins and isolator may set, change or remove isolator.dev/* labels")
	}
	_, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "claims-trust", Labels: map[string]string{"isolator.dev/trust": "trusted"}}}, metav1.CreateOptions{})
	refusedBy(t, "create a namespace labelled trusted", err, byLabelGuard, "changed isolator.dev/trust")
	// Other labels stay the tenant's to edit.
	if _, err := nss.Patch(ctx, "shop", types.StrategicMergePatchType, labelPatch(map[string]any{"team": "shop"}), metav1.PatchOptions{}); err != nil {
		t.Errorf("the tenant may not edit its own labels: %v", err)
	}
	ns, err := cp.Client().CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if err != nil || ns.Labels["isolator.dev/trust"] != "untrusted" {
		t.Fatalf("shop's trust label changed: %v %v", ns.Labels, err)
	}
	// The admin may.
	if _, err := cp.Client().CoreV1().Namespaces().Patch(ctx, "tenant-acme", types.StrategicMergePatchType, labelPatch(map[string]any{"isolator.dev/trust": "untrusted"}), metav1.PatchOptions{}); err != nil {
		t.Errorf("a cluster admin could not label a namespace: %v", err)
	}
}

// 8. Mirror pods: only a kubelet's own mirror pod is left alone; anyone else who adds
// the mirror annotation is decided like every other pod.
func TestMirrorPods(t *testing.T) {
	ctx := testContext(t)
	node, err := cp.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().Nodes().Delete(context.Background(), "node-b", metav1.DeleteOptions{})
	})
	mirror := func(name string) *corev1.Pod {
		p := pod("shop", name, "registry.example.com/shop/static:1")
		p.Annotations = map[string]string{"kubernetes.io/config.mirror": "hash"}
		p.Spec.NodeName = node.Name
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID, Controller: ptr(true)}}
		return p
	}
	got, err := attempt(t, ctx, mirror("tenant-mirror"))
	admittedWith(t, "a tenant's fake mirror pod", got, err, "kata-rc")
	cfg, err := cp.UserConfig("system:node:node-b", "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	kubelet, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kubelet.CoreV1().Pods("shop").Create(ctx, mirror("kubelet-mirror"), metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("a kubelet could not create its mirror pod: %v", err)
	}
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().Pods("shop").Delete(context.Background(), "kubelet-mirror", metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	})
	if className(p) != "" {
		t.Errorf("a kubelet's mirror pod was changed: class %q", className(p))
	}
}
