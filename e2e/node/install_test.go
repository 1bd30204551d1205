//go:build e2e

package node_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/ociimage"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

// The addresses of a connected pod host (connectNode). The link between the machine
// and the node's network namespace is a veth pair on a /30; the machine routes only
// the pod range to it, and the node has no default route, so nothing from a pod can
// go further than the machine's end of the link.
const (
	linkMachine = "10.201.0.1"
	linkNode    = "10.201.0.2"
	linkHost    = "isoe2e-m" // the machine's end
	linkPeer    = "isoe2e-n" // the node's end
)

// connectNode links the pod host's network namespace with the machine, so that the
// apiserver (on the machine's loopback) reaches pods and pods reach the apiserver as
// they do in a cluster:
//   - a veth pair, the machine's end linkMachine, the node's linkNode, and a route for
//     the pod range on the machine; the node forwards between the link and its bridge;
//   - the service range is unreachable in the node unless kube-proxy's rules take a
//     packet (the kubernetes Service);
//   - a TCP relay on linkMachine to the apiserver, which serves on loopback only, and
//     the kubernetes Service's EndpointSlice pointing at it.
//
// It returns the relay's address, for kubeconfigs used from inside the node.
func (h *host) connectNode(t *testing.T, c *cluster) (relay string) {
	t.Helper()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	inNode := func(args ...string) {
		run(append([]string{"nsenter", "--net=" + h.node.Namespace("net"), "--"}, args...)...)
	}
	// A link a killed earlier run left behind goes first (its route goes with it).
	_ = exec.Command("ip", "link", "del", linkHost).Run()
	run("ip", "link", "add", linkHost, "type", "veth", "peer", "name", linkPeer)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", linkHost).Run() })
	run("ip", "link", "set", linkPeer, "netns", fmt.Sprint(h.node.PID()))
	run("ip", "addr", "add", linkMachine+"/30", "dev", linkHost)
	run("ip", "link", "set", linkHost, "up")
	run("ip", "route", "add", harness.PodSubnet, "via", linkNode, "dev", linkHost)
	inNode("ip", "addr", "add", linkNode+"/30", "dev", linkPeer)
	inNode("ip", "link", "set", linkPeer, "up")
	inNode("ip", "route", "add", "unreachable", "10.0.0.0/24")
	inNode("sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward") // this namespace's only
	if out, err := exec.Command("nsenter", "--net="+h.node.Namespace("net"), "ip", "route", "get", "1.1.1.1").CombinedOutput(); err == nil {
		t.Fatalf("the connected node routes off the machine: %s", out)
	}

	// The relay: the apiserver listens on the machine's loopback only.
	ln, err := net.Listen("tcp", linkMachine+":0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	u, err := url.Parse(c.cp.URL())
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				up, err := net.Dial("tcp", u.Host)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, conn) }()
				_, _ = io.Copy(conn, up)
			}()
		}
	}()
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	name, proto, ready := "https", corev1.ProtocolTCP, true
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes", Namespace: metav1.NamespaceDefault,
			Labels: map[string]string{discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "isolator-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{linkMachine}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Protocol: &proto, Port: &port}},
	}
	if _, err := c.client.DiscoveryV1().EndpointSlices(metav1.NamespaceDefault).Create(context.Background(), slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return ln.Addr().String()
}

// nodeKubeconfig is a kubeconfig for user that reaches the apiserver through relay,
// from inside the node's network namespace.
func nodeKubeconfig(t *testing.T, c *cluster, relay, user string, groups ...string) string {
	t.Helper()
	path, err := c.cp.UserKubeconfig(user, groups...)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server = "https://" + relay
		cl.TLSServerName = "localhost"
	}
	out := path + ".node"
	if err := clientcmd.WriteToFile(*cfg, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// kubeProxyConfig runs kube-proxy in iptables mode inside the node. The conntrack
// settings stay as the machine has them (0 leaves each alone).
const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: %q
clusterCIDR: %s
hostnameOverride: %s
healthzBindAddress: ""
metricsBindAddress: ""
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`

// startKubeProxy runs kube-proxy in the node's namespaces, as system:kube-proxy.
func (h *host) startKubeProxy(t *testing.T, c *cluster, relay, node string) {
	t.Helper()
	bin, err := harness.Tool("kube-proxy")
	if err != nil {
		t.Fatal(err)
	}
	kc := nodeKubeconfig(t, c, relay, "system:kube-proxy")
	config := filepath.Join(h.dir, "kube-proxy.yaml")
	if err := os.WriteFile(config, fmt.Appendf(nil, kubeProxyConfig, kc, harness.PodSubnet, node), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := harness.StartProcess(harness.ProcessSpec{
		Name: "kube-proxy", Path: "nsenter",
		Args:    []string{"--mount=" + h.node.Namespace("mnt"), "--net=" + h.node.Namespace("net"), "--", bin, "--config=" + config, "--v=2"},
		LogPath: filepath.Join(h.dir, "kube-proxy.log"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-proxy log (last 20 lines):\n%s", p.LogTail(20))
		}
		_ = p.Stop(10 * time.Second)
	})
}

// buildImages builds and imports the two images, the node image carrying rel.
func (h *host) buildImages(t *testing.T, rel fakekata.Release) {
	t.Helper()
	dir := t.TempDir()
	kata, err := rel.WriteDir(filepath.Join(dir, "kata"))
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range []ociimage.Spec{
		ociimage.Webhook("localhost/isolator-webhook:e2e", staticIsolator(t, dir, true), runtime.GOARCH),
		ociimage.Node("localhost/isolator-node:e2e", staticIsolator(t, dir, false), kata, runtime.GOARCH),
	} {
		img, err := ociimage.Build(spec)
		if err != nil {
			t.Fatal(err)
		}
		archive := filepath.Join(dir, filepath.Base(spec.Ref)+".oci.tar")
		if err := ociimage.WriteArchive(archive, spec.Ref, img); err != nil {
			t.Fatal(err)
		}
		h.importImage(archive)
	}
}

// userOverlay is what a user's overlay of manifests/overlays/self-signed sets on this
// node: the images built here, and the node agent's ways to this test node's
// containerd (its socket in the test directory, containerd 2.4's binary, and a SIGTERM
// restart, for which the agent needs the host's PID namespace, as docs/node.md says),
// and the device that stands for /dev/kvm.
const userOverlay = `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
images:
- name: isolator-webhook
  newName: localhost/isolator-webhook
  newTag: e2e
- name: isolator-node
  newName: localhost/isolator-node
  newTag: e2e
patches:
- target:
    kind: DaemonSet
    name: isolator-node
  patch: |-
    - op: add
      path: /spec/template/spec/hostPID
      value: true
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --restart=signal
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --cri-endpoint=unix:///host%s
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --containerd-binary=%s
    - op: add
      path: /spec/template/spec/containers/0/args/-
      value: --kvm-device=/host%s
`

// kubectl runs kubectl as cluster admin and fails the test on an error.
func kubectl(t *testing.T, c *cluster, args ...string) string {
	t.Helper()
	out, err := c.cp.Kubectl(context.Background(), nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestInstallAsAUser installs isolator as a user does, with kubectl apply -k, on a
// control plane with a real node (kubelet, kube-proxy, containerd 2.4 with the stand-in
// Kata shim): the webhook Deployment's pods become Ready and the apiserver calls them
// through their Service; labelling the node runs the DaemonSet, whose pod installs Kata
// into the node's containerd through its hostPath mounts, passes the sandbox check and
// labels the node; then pods are admitted by the webhook and run with the class it set.
func TestInstallAsAUser(t *testing.T) {
	c := startClusterWith(t, harness.Etcd, harness.APIServer, harness.ControllerManager)
	startScheduler(t, c)
	h := newPodHost(t, fakekata.Release{Version: "4.1.0", Shim: standIn(t)})
	relay := h.connectNode(t, c)
	h.startKubeProxy(t, c, relay, "node-1")
	h.startKubelet(t, c, "node-1")
	h.buildImages(t, fakekata.Release{Version: "4.1.0", Shim: standIn(t)})

	dir := filepath.Join(h.dir, "overlay")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	base, err := filepath.Rel(dir, filepath.Join(repo, "manifests", "overlays", "self-signed"))
	if err != nil {
		t.Fatal(err)
	}
	overlay := fmt.Sprintf(userOverlay, base, h.sock, filepath.Join(toolsBin, "containerd2"), h.kvm)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	kubectl(t, c, "apply", "--server-side", "--force-conflicts", "-k", dir)
	kubectl(t, c, "-n", "isolator-system", "rollout", "status", "deployment/isolator-webhook", "--timeout=4m")
	t.Logf("webhook Deployment available %v after kubectl apply", time.Since(start).Round(time.Millisecond))

	// The platform's policies, validated on apply by the webhook through its Service.
	kubectl(t, c, "apply", "-f", filepath.Join(repo, "manifests", "examples", "policies.yaml"))
	for _, ns := range []string{"tenant-a"} {
		if _, err := c.client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// The webhook decides: a tenant pod gets kata-rc and waits for a Kata node; a pod in
	// default gets runc-rc and runs.
	var tenant, plain *corev1.Pod
	waitForLong(t, "the policy to be in force", time.Minute, func() bool {
		tenant = createPod(t, c, "tenant-a", "first")
		if tenant.Spec.RuntimeClassName != nil && *tenant.Spec.RuntimeClassName == "kata-rc" {
			return true
		}
		_ = c.client.CoreV1().Pods("tenant-a").Delete(context.Background(), "first", metav1.DeleteOptions{})
		waitForLong(t, "the pod to go", time.Minute, func() bool {
			_, err := c.client.CoreV1().Pods("tenant-a").Get(context.Background(), "first", metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
		return false
	})
	plain = createPod(t, c, metav1.NamespaceDefault, "plain")
	if got := ptr.Deref(plain.Spec.RuntimeClassName, ""); got != "runc-rc" {
		t.Fatalf("a pod in default was admitted with class %q, want runc-rc", got)
	}
	waitForLong(t, "the runc-rc pod to succeed", 2*time.Minute, func() bool { return c.podIn(t, "default", "plain").Status.Phase == corev1.PodSucceeded })
	if out := h.podOutput(t, c.podIn(t, "default", "plain")); !strings.HasPrefix(out, "isolator ") {
		t.Errorf("the runc-rc pod printed %q", out)
	}
	var reason string
	waitForLong(t, "the scheduler's verdict on the kata-rc pod", time.Minute, func() bool {
		reason = unschedulable(c.podIn(t, "tenant-a", "first"))
		return reason != ""
	})
	if !strings.Contains(reason, "node affinity/selector") {
		t.Errorf("the kata-rc pod before the label: %s", reason)
	}
	t.Logf("before the label: the tenant pod (kata-rc) is Pending: %s", reason)

	start = time.Now()
	setLabel(t, c, "node-1", nodestate.LabelEnabled, "enabled")
	waitForLong(t, "the DaemonSet to label the node", 4*time.Minute, func() bool {
		return c.node(t, "node-1").Labels[nodestate.LabelRuntime] == "true"
	})
	t.Logf("node labelled %s=true %v after %s=enabled", nodestate.LabelRuntime, time.Since(start).Round(time.Millisecond), nodestate.LabelEnabled)
	waitForLong(t, "the kata-rc pod to succeed", 2*time.Minute, func() bool { return c.podIn(t, "tenant-a", "first").Status.Phase == corev1.PodSucceeded })
	tenant = c.podIn(t, "tenant-a", "first")
	if out := h.podOutput(t, tenant); !strings.HasPrefix(out, "isolator ") {
		t.Errorf("the kata-rc pod printed %q", out)
	}
	if got := h.handlerOf(t, tenant); got != "kata" {
		t.Errorf("the kata-rc pod's sandbox handler %q, want kata", got)
	}
	t.Logf("after the label: the tenant pod ran on the kata handler (the stand-in) %v after the label", time.Since(start).Round(time.Millisecond))

	// A rolling restart of the webhook while pods are created, through the real Service:
	// every pod is admitted, each with the class the policy decides. (They stay Pending:
	// only the admission counts here.)
	rollout := make(chan string, 1)
	go func() {
		for _, args := range [][]string{{"rollout", "restart"}, {"rollout", "status", "--timeout=4m"}} {
			if _, err := c.cp.Kubectl(context.Background(), nil, append([]string{"-n", "isolator-system"}, append(args, "deployment/isolator-webhook")...)...); err != nil {
				rollout <- err.Error()
				return
			}
		}
		rollout <- ""
	}()
	var created, lost, wrong int
	done := false
	for i := 0; !done || i < 20; i++ {
		select {
		case msg := <-rollout:
			if msg != "" {
				t.Fatalf("rollout: %s", msg)
			}
			done = true
		default:
		}
		ns, want := "tenant-a", "kata-rc"
		if i%2 == 1 {
			ns, want = metav1.NamespaceDefault, "runc-rc"
		}
		pod, err := tryCreatePod(c, ns, fmt.Sprintf("during-rollout-%d", i), map[string]string{"isolator.dev/e2e": "admission-only"})
		switch {
		case err != nil:
			lost++
			t.Logf("pod %s/during-rollout-%d: %v", ns, i, err)
		case ptr.Deref(pod.Spec.RuntimeClassName, "") != want:
			wrong++
			t.Logf("pod %s/%s: class %q, want %s", ns, pod.Name, ptr.Deref(pod.Spec.RuntimeClassName, ""), want)
		default:
			created++
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("during the webhook's rolling restart: %d pods created with the right class, %d lost, %d with the wrong class", created, lost, wrong)
	if lost != 0 || wrong != 0 {
		t.Errorf("%d pods lost and %d with the wrong class during the rolling restart", lost, wrong)
	}
}

// createPod creates a pod that runs the node image's `isolator version` once, with no
// runtime class of its own: the webhook sets one.
func createPod(t *testing.T, c *cluster, ns, name string) *corev1.Pod {
	t.Helper()
	pod, err := tryCreatePod(c, ns, name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// tryCreatePod is createPod; a nodeSelector no node matches keeps the pod from running
// (the rollout test needs only the admission).
func tryCreatePod(c *cluster, ns, name string, nodeSelector map[string]string) (*corev1.Pod, error) {
	pod := versionPod(ns, name)
	pod.Spec.NodeSelector = nodeSelector
	return c.client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{})
}

func (c *cluster) podIn(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := c.client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// unschedulable is the scheduler's reason when it could not place the pod, else "".
func unschedulable(p *corev1.Pod) string {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse {
			return cond.Reason + ": " + cond.Message
		}
	}
	return ""
}
