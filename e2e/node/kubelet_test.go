//go:build e2e

package node_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/ociimage"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

// startKubelet runs a real kubelet on the pod host (harness.Node.StartKubelet, whose
// config says which settings only this environment needs), registering Node name.
func (h *host) startKubelet(t *testing.T, c *cluster, name string) {
	t.Helper()
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(h.node.KubeletLog())
			t.Logf("kubelet log, the test's pods (last 30 lines):\n%s", tail(grepLines(string(log), "-pod"), 30))
			c.dumpPods(t)
			logs, _ := filepath.Glob(h.node.Path("/var/log/pods/*/*/*.log"))
			for _, l := range logs {
				data, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", strings.TrimPrefix(l, h.dir), tail(string(data), 6))
			}
		}
	})
	if err := h.node.StartKubelet(context.Background(), c.cp, name); err != nil {
		t.Fatal(err)
	}
}

// dumpPods logs every pod's state and the Warning Events, for a failed test.
func (c *cluster) dumpPods(t *testing.T) {
	ctx := context.Background()
	if pods, err := c.client.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
		for _, pod := range pods.Items {
			var states []string
			for _, cs := range pod.Status.ContainerStatuses {
				states = append(states, fmt.Sprintf("%s ready=%v restarts=%d %+v", cs.Name, cs.Ready, cs.RestartCount, cs.State))
			}
			t.Logf("pod %s/%s on %q: %s %v", pod.Namespace, pod.Name, pod.Spec.NodeName, pod.Status.Phase, states)
		}
	}
	if events, err := c.client.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"}); err == nil {
		for _, e := range events.Items {
			t.Logf("event %s %s/%s: %s", e.Reason, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
		}
	}
}

// startScheduler runs kube-scheduler against the cluster (harness), until the
// control plane stops.
func startScheduler(t *testing.T, c *cluster) {
	t.Helper()
	p, err := c.cp.StartScheduler(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-scheduler log (last 20 lines):\n%s", tail(grepLines(harness.LogTail(p.LogPath(), 2000), "-pod"), 20))
		}
	})
}

// applyRuntimeClasses creates the RuntimeClasses of manifests/runtimeclasses.
func applyRuntimeClasses(t *testing.T, c *cluster) {
	t.Helper()
	for _, f := range []string{"runc-rc.yaml", "kata-rc.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "manifests", "runtimeclasses", f))
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(data, nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, err := c.client.NodeV1().RuntimeClasses().Create(context.Background(), obj.(*nodev1.RuntimeClass), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
}

// onePod creates a pod of class that runs the node image's `isolator version` once.
func onePod(t *testing.T, c *cluster, name, class string) *corev1.Pod {
	t.Helper()
	pod := versionPod(metav1.NamespaceDefault, name)
	pod.Spec.RuntimeClassName = &class
	created, err := c.client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return created
}

// versionPod is a pod that runs the node image's `isolator version` once.
func versionPod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "main", Image: "localhost/isolator-node:e2e", Args: []string{"version"},
				ImagePullPolicy: corev1.PullNever,
			}},
		},
	}
}

// podOutput is what the pod's container "main" printed.
func (h *host) podOutput(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	out, err := h.node.PodOutput(pod, "main")
	if err != nil {
		t.Fatalf("the pod's log: %v", err)
	}
	return out
}

// handlerOf is the runtime handler containerd started the pod's sandbox with.
func (h *host) handlerOf(t *testing.T, pod *corev1.Pod) string {
	t.Helper()
	handler, err := h.node.PodHandler(context.Background(), string(pod.UID))
	if err != nil {
		t.Fatalf("the pod's sandbox: %v", err)
	}
	return handler
}

// TestPodsRunOnTheNode: a real kubelet and kube-scheduler on the pod host. A runc-rc
// pod runs and prints; a kata-rc pod stays Pending, with the scheduler's reason, until
// isolator has installed Kata and the sandbox check has passed; then it is placed on
// the node and started by the kata handler (the stand-in shim, which stands for the
// Kata VM).
func TestPodsRunOnTheNode(t *testing.T) {
	c := startClusterWith(t, harness.Etcd, harness.APIServer, harness.ControllerManager)
	h := newPodHost(t, fakekata.Release{Version: "4.1.0", Shim: standIn(t)})
	dir := t.TempDir()
	kata, err := (fakekata.Release{Version: "4.1.0"}).WriteDir(filepath.Join(dir, "kata"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := ociimage.Build(ociimage.Node("localhost/isolator-node:e2e", staticIsolator(t, dir, false), kata, runtime.GOARCH))
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "node.oci.tar")
	if err := ociimage.WriteArchive(archive, "localhost/isolator-node:e2e", img); err != nil {
		t.Fatal(err)
	}
	h.importImage(archive)
	applyRuntimeClasses(t, c)
	startScheduler(t, c)
	h.startKubelet(t, c, "node-1")

	runc := onePod(t, c, "runc-pod", "runc-rc")
	waitForLong(t, "the runc-rc pod to succeed", 2*time.Minute, func() bool {
		return c.podIn(t, metav1.NamespaceDefault, "runc-pod").Status.Phase == corev1.PodSucceeded
	})
	if out := h.podOutput(t, runc); !strings.HasPrefix(out, "isolator ") {
		t.Errorf("runc-rc pod printed %q", out)
	}
	if got := h.handlerOf(t, runc); got != "runc" {
		t.Errorf("runc-rc pod's sandbox handler %q", got)
	}

	onePod(t, c, "kata-pod", "kata-rc")
	var reason string
	waitForLong(t, "the scheduler's verdict on the kata-rc pod", time.Minute, func() bool {
		reason = unschedulable(c.podIn(t, metav1.NamespaceDefault, "kata-pod"))
		return reason != ""
	})
	if !strings.Contains(reason, "Unschedulable") || !strings.Contains(reason, "node affinity/selector") {
		t.Errorf("kata-rc pod before the install: %s", reason)
	}
	t.Logf("kata-rc pod before the install: Pending, %s", reason)

	start := time.Now()
	h.mustIsolator("install", "--artifacts", h.tarball, "--node-name", "node-1", "--kubeconfig", c.kubeconfig)
	if v := c.node(t, "node-1").Labels[nodestate.LabelRuntime]; v != "true" {
		t.Fatalf("node label %s=%q after install", nodestate.LabelRuntime, v)
	}
	waitForLong(t, "the kata-rc pod to succeed", 2*time.Minute, func() bool {
		return c.podIn(t, metav1.NamespaceDefault, "kata-pod").Status.Phase == corev1.PodSucceeded
	})
	t.Logf("kata-rc pod succeeded %v after the install began", time.Since(start).Round(time.Millisecond))
	kataPod := c.podIn(t, metav1.NamespaceDefault, "kata-pod")
	if out := h.podOutput(t, kataPod); !strings.HasPrefix(out, "isolator ") {
		t.Errorf("kata-rc pod printed %q", out)
	}
	if got := h.handlerOf(t, kataPod); got != "kata" {
		t.Errorf("kata-rc pod's sandbox handler %q, want kata", got)
	}
}
