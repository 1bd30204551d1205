//go:build e2e

package admission

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/client-go/kubernetes"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// a. A pod in an untrusted namespace gets kata-rc, and the in-tree RuntimeClass plugin,
// re-run after the webhook's patch, adds kata-rc's overhead and nodeSelector.
func TestUntrustedNamespaceGetsKata(t *testing.T) {
	ctx := testContext(t)
	p := mustCreate(t, ctx, newPod("shop", "storefront", "registry.example.com/shop/storefront:1.4"))
	expectDecision(t, p, "kata-rc", "platform/untrusted-namespaces")
	rc, err := cp.Client().NodeV1().RuntimeClasses().Get(ctx, "kata-rc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rc.Overhead == nil || len(rc.Overhead.PodFixed) == 0 {
		t.Fatal("kata-rc in manifests/runtimeclasses has no overhead.podFixed")
	}
	if !apiequality.Semantic.DeepEqual(p.Spec.Overhead, rc.Overhead.PodFixed) {
		t.Errorf("stored pod overhead %v, want kata-rc's %v", p.Spec.Overhead, rc.Overhead.PodFixed)
	}
	for k, v := range rc.Scheduling.NodeSelector {
		if p.Spec.NodeSelector[k] != v {
			t.Errorf("stored pod nodeSelector %v lacks kata-rc's %s=%s", p.Spec.NodeSelector, k, v)
		}
	}
	if p.Spec.NodeSelector["isolator.dev/kata-runtime"] != "true" {
		t.Errorf("nodeSelector %v: want isolator.dev/kata-runtime=true so the pod lands on a node with Kata", p.Spec.NodeSelector)
	}
}

// b. A pod in a trusted namespace gets runc-rc, from its own rule or the default.
func TestTrustedNamespaceGetsRunc(t *testing.T) {
	ctx := testContext(t)
	p := mustCreate(t, ctx, newPod("payments", "ledger", "registry.example.com/platform/ledger:2.0.1"))
	expectDecision(t, p, "runc-rc", "platform/platform-images")
	if p.Spec.Overhead != nil {
		t.Errorf("runc-rc pod has overhead %v", p.Spec.Overhead)
	}
	p = mustCreate(t, ctx, newPod("plain", "svc", "registry.example.com/team/svc:1"))
	expectDecision(t, p, "runc-rc", "platform/defaultRuntimeClass")
}

// c. Image rules: Docker Hub images, spelled any way, go to kata-rc even in a trusted
// namespace, and an initContainer's image counts.
func TestImageRules(t *testing.T) {
	ctx := testContext(t)
	for i, image := range []string{"nginx", "nginx:1.27", "docker.io/library/nginx", "index.docker.io/library/nginx:1.27",
		"library/nginx@sha256:0000000000000000000000000000000000000000000000000000000000000000", "registry-1.docker.io/bitnami/redis"} {
		p := mustCreate(t, ctx, newPod("payments", fmt.Sprintf("hub-%d", i), image))
		expectDecision(t, p, "kata-rc", "platform/docker-hub-images")
	}
	p := mustCreate(t, ctx, newPod("payments", "cache", "registry.example.com/platform/cache:1.0", withInit("redis:7")))
	expectDecision(t, p, "kata-rc", "platform/docker-hub-images")
	p = mustCreate(t, ctx, newPod("payments", "local", "localhost:5000/platform/tool:1"))
	expectDecision(t, p, "runc-rc", "platform/defaultRuntimeClass")
}

// d. A pod-label rule sends CI runners to kata-rc in any namespace.
func TestPodLabelRule(t *testing.T) {
	ctx := testContext(t)
	p := mustCreate(t, ctx, newPod("payments", "runner", "registry.example.com/platform/runner:3.1", withLabels(map[string]string{"app": "ci-runner"})))
	expectDecision(t, p, "kata-rc", "ci/ci-runners")
}

// e. A pod's own class: less isolated is denied (Deny) or replaced with a warning
// (Replace); more isolated is kept.
func TestPodNamedClass(t *testing.T) {
	ctx := testContext(t)
	c, w := clientWithWarnings(t)
	_, err := create(t, ctx, c, newPod("shop", "sneaky", "registry.example.com/shop/app:1", withClass("runc-rc")))
	expectForbidden(t, err, "platform/untrusted-namespaces", "runc-rc", "kata-rc")

	p, err := create(t, ctx, c, newPod("tenant-acme", "sneaky", "registry.example.com/acme/app:1", withClass("runc-rc")))
	if err != nil {
		t.Fatal(err)
	}
	expectDecision(t, p, "kata-rc", "platform/tenant-namespaces")
	found := false
	for _, msg := range w.all() {
		found = found || (strings.Contains(msg, "replaced runtimeClassName runc-rc with kata-rc") && strings.Contains(msg, "platform/tenant-namespaces"))
	}
	if !found {
		t.Errorf("no replacement warning reached the client; got %q", w.all())
	}

	p = mustCreate(t, ctx, newPod("payments", "careful", "registry.example.com/platform/ledger:2", withClass("kata-rc")))
	expectDecision(t, p, "kata-rc", "")
	if _, set := p.Annotations["isolator.dev/rule"]; set {
		t.Errorf("a kept pod was annotated: %v", p.Annotations)
	}
}

// f. A hostNetwork pod in a sandboxed namespace is denied, saying why.
func TestHostNetworkDenied(t *testing.T) {
	ctx := testContext(t)
	p := newPod("shop", "debug", "registry.example.com/shop/tools:1")
	p.Spec.HostNetwork = true
	_, err := create(t, ctx, cp.Client(), p)
	expectForbidden(t, err, "hostNetwork", "kata-rc", "platform/untrusted-namespaces")
}

// g. Pods created by the controller-manager for a Deployment and a Job get kata-rc.
func TestControllerCreatedPods(t *testing.T) {
	ctx := testContext(t)
	labels := map[string]string{"app": "web"}
	one := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "registry.example.com/shop/web:1"}}},
			},
		},
	}
	if _, err := cp.Client().AppsV1().Deployments("shop").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "migrate", Namespace: "shop"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers:    []corev1.Container{{Name: "migrate", Image: "registry.example.com/shop/migrate:1"}},
		}}},
	}
	if _, err := cp.Client().BatchV1().Jobs("shop").Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bg := metav1.DeletePropagationBackground
		_ = cp.Client().AppsV1().Deployments("shop").Delete(context.Background(), "web", metav1.DeleteOptions{PropagationPolicy: &bg})
		_ = cp.Client().BatchV1().Jobs("shop").Delete(context.Background(), "migrate", metav1.DeleteOptions{PropagationPolicy: &bg})
	})
	for _, sel := range []string{"app=web", "job-name=migrate"} {
		var pods *corev1.PodList
		err := harness.WaitFor(ctx, time.Minute, "pods "+sel, func(ctx context.Context) (bool, error) {
			var err error
			pods, err = cp.Client().CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: sel})
			return err == nil && len(pods.Items) > 0, err
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := range pods.Items {
			if len(pods.Items[i].OwnerReferences) == 0 {
				t.Errorf("pod %s has no owner: not created by a controller", pods.Items[i].Name)
			}
			expectDecision(t, &pods.Items[i], "kata-rc", "platform/untrusted-namespaces")
		}
	}
}

// i. kube-system and mirror pods are left alone. A mirror pod is what a kubelet
// creates for a static pod, so only a node's own identity is exempt: anyone else who adds
// the mirror annotation is decided like every other pod.
func TestExcludedPods(t *testing.T) {
	ctx := testContext(t)
	p := mustCreate(t, ctx, newPod("kube-system", "hub-in-kube-system", "nginx"))
	expectDecision(t, p, "", "")
	if _, ok := p.Annotations["isolator.dev/rule"]; ok {
		t.Errorf("kube-system pod annotated: %v", p.Annotations)
	}

	node, err := cp.Client().CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().Nodes().Delete(context.Background(), "node-1", metav1.DeleteOptions{})
	})
	mirror := func(name string) *corev1.Pod {
		m := newPod("shop", name, "registry.example.com/shop/web:1",
			withAnnotations(map[string]string{"kubernetes.io/config.mirror": "mirror-hash"}))
		m.Spec.NodeName = node.Name
		m.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID, Controller: ptrTo(true)}}
		return m
	}
	kubeletCfg, err := cp.UserConfig("system:node:node-1", "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	kubelet, err := kubernetes.NewForConfig(kubeletCfg)
	if err != nil {
		t.Fatal(err)
	}
	p, err = create(t, ctx, kubelet, mirror("static-web"))
	if err != nil {
		t.Fatalf("the kubelet creating its mirror pod: %v", err)
	}
	if class(p) != "" {
		t.Errorf("a kubelet's mirror pod got runtimeClassName %q; the webhook's matchConditions must skip it", class(p))
	}
	p = mustCreate(t, ctx, mirror("fake-mirror"))
	expectDecision(t, p, "kata-rc", "platform/untrusted-namespaces")
}

func ptrTo[T any](v T) *T { return &v }

// A namespace created a moment before its first pod: the informer may not have it yet,
// and the webhook reads it from the apiserver.
func TestNewNamespaceCacheMiss(t *testing.T) {
	ctx := testContext(t)
	for i := range 5 {
		name := fmt.Sprintf("fresh-%d", i)
		if _, err := cp.CreateNamespace(ctx, name, map[string]string{"isolator.dev/trust": "untrusted"}); err != nil {
			t.Fatal(err)
		}
		p := mustCreate(t, ctx, newPod(name, "first", "registry.example.com/shop/web:1"))
		expectDecision(t, p, "kata-rc", "platform/untrusted-namespaces")
	}
}
