//go:build e2e

package node_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/isolator-dev/isolator/bootstrap/cri"
	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

// nodeUser is the identity the bootstrapper runs as: the isolator-node ServiceAccount,
// with exactly the RBAC of manifests/node/rbac.yaml.
const nodeUser = "system:serviceaccount:isolator-system:isolator-node"

// cluster is a real kube-apiserver (with etcd) and a kubeconfig for the bootstrapper.
type cluster struct {
	cp         *harness.ControlPlane
	client     kubernetes.Interface
	kubeconfig string
}

func startCluster(t *testing.T) *cluster {
	return startClusterWith(t, harness.Etcd, harness.APIServer)
}

// startClusterWith is startCluster with the given control plane components (the
// kubelet tests need the controller-manager too).
func startClusterWith(t *testing.T, components ...harness.Component) *cluster {
	t.Helper()
	requireRoot(t)
	cp := harness.StartForTest(t, harness.Options{
		Components: components,
		// kube-apiserver v1.37 refuses a loopback advertise address with the default
		// lease endpoint reconciler; these tests need no kubernetes Service endpoints.
		APIServerFlags: []string{"--endpoint-reconciler-type=none"},
		// With a kubelet: it registers its Node with the not-ready taint, which the node
		// lifecycle controller lifts once the Node is Ready; the endpoints controllers
		// give Services their ready pods (the flag adds to the harness's list).
		ControllerManagerFlags: []string{"--controllers=node-lifecycle-controller,endpoints-controller,endpointslice-controller"},
	})
	ctx := context.Background()
	client := cp.Client()
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "isolator-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	applyRBAC(t, client, filepath.Join("..", "..", "manifests", "node", "rbac.yaml"))
	kc, err := cp.UserKubeconfig(nodeUser, "system:serviceaccounts", "system:serviceaccounts:isolator-system")
	if err != nil {
		t.Fatal(err)
	}
	return &cluster{cp: cp, client: client, kubeconfig: kc}
}

// createNode registers a Node object opted in with isolator.dev/kata=enabled and, when
// taint is set, the startup taint.
func (c *cluster) createNode(t *testing.T, name string, taint bool) {
	t.Helper()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{nodestate.LabelEnabled: "enabled"}}}
	if taint {
		node.Spec.Taints = []corev1.Taint{{Key: nodestate.TaintNotReady, Effect: corev1.TaintEffectNoSchedule}}
	}
	if _, err := c.client.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) createDaemonSet(t *testing.T) {
	t.Helper()
	labels := map[string]string{"app": "isolator-node"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "isolator-node", Namespace: "isolator-system"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{nodestate.LabelEnabled: "enabled"},
					Containers:   []corev1.Container{{Name: "node", Image: "isolator:e2e"}},
				},
			},
		},
	}
	if _, err := c.client.AppsV1().DaemonSets("isolator-system").Create(context.Background(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (c *cluster) node(t *testing.T, name string) *corev1.Node {
	t.Helper()
	n, err := c.client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// reasons lists the reasons of the Events isolator recorded on a node.
func (c *cluster) reasons(t *testing.T, name string) []string {
	t.Helper()
	list, err := c.client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Kind != "Node" || e.Source.Component != "isolator-node" {
			t.Errorf("event %s: involvedObject %s, source %s", e.Name, e.InvolvedObject.Kind, e.Source.Component)
		}
		out = append(out, e.Reason)
	}
	// Event timestamps have second resolution: compare reasons as a sorted list.
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// hasStartupTaint ignores the taints the apiserver itself adds to new Nodes.
func hasStartupTaint(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == nodestate.TaintNotReady })
}

// labelRecorder records every value the node's runtime label takes, through a watch.
type labelRecorder struct {
	mu     sync.Mutex
	values []string
	stop   func()
}

func (c *cluster) recordLabel(t *testing.T, name string) *labelRecorder {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := c.client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	r := &labelRecorder{stop: cancel}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Error {
				continue
			}
			v, set := n.Labels[nodestate.LabelRuntime]
			if !set {
				v = "<none>"
			}
			r.mu.Lock()
			if len(r.values) == 0 || r.values[len(r.values)-1] != v {
				r.values = append(r.values, v)
			}
			r.mu.Unlock()
		}
	}()
	r.stop = func() { cancel(); w.Stop(); <-done }
	return r
}

func (r *labelRecorder) seen() []string {
	r.stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.values)
}

// TestNodeLabelLifecycle runs the bootstrapper with --kubeconfig against a real
// kube-apiserver: the runtime label is "false" during install and "true" only after
// containerd serves kata, the startup taint goes after labelling, Events tell the story,
// a failed install leaves the node unlabelled, and uninstall removes the label.
func TestNodeLabelLifecycle(t *testing.T) {
	c := startCluster(t)
	rt := runtimes(t)[0]

	t.Run("install and uninstall", func(t *testing.T) {
		h := newHost(t, rt)
		original := h.writeDefaultConfig()
		h.startContainerd(nil)
		c.createNode(t, "node-a", true)
		rec := c.recordLabel(t, "node-a")
		h.mustIsolator("install", "--artifacts", h.tarball, "--node-name", "node-a", "--kubeconfig", c.kubeconfig)
		waitLabel(t, c, "node-a", "true")
		if got := rec.seen(); !slices.Equal(got, []string{"<none>", "false", "true"}) {
			t.Errorf("label values during install = %v, want [<none> false true]", got)
		}
		if hasStartupTaint(c.node(t, "node-a")) {
			t.Errorf("startup taint not removed: %v", c.node(t, "node-a").Spec.Taints)
		}
		if got := c.reasons(t, "node-a"); !slices.Equal(got, sorted(nodestate.ReasonInstalling, nodestate.ReasonReady)) {
			t.Errorf("events = %v", got)
		}

		// A second install keeps the label as it is: no flap through "false".
		rec = c.recordLabel(t, "node-a")
		h.mustIsolator("install", "--artifacts", h.tarball, "--node-name", "node-a", "--kubeconfig", c.kubeconfig)
		time.Sleep(200 * time.Millisecond)
		if got := rec.seen(); !slices.Equal(got, []string{"true"}) {
			t.Errorf("label values during a second install = %v, want [true]", got)
		}

		h.mustIsolator("uninstall", "--node-name", "node-a", "--kubeconfig", c.kubeconfig)
		if _, set := c.node(t, "node-a").Labels[nodestate.LabelRuntime]; set {
			t.Error("runtime label still set after uninstall")
		}
		if got := c.reasons(t, "node-a"); !slices.Contains(got, nodestate.ReasonUninstalled) {
			t.Errorf("events after uninstall = %v", got)
		}
		if !bytes.Equal(h.config(), original) {
			t.Error("config differs after uninstall")
		}
	})

	t.Run("failed install stays unlabelled", func(t *testing.T) {
		h := newHost(t, rt)
		h.writeDefaultConfig()
		dropIn := filepath.Join(h.etc, "conf.d", "isolator-kata.toml")
		h.startContainerd(func() bool { _, err := os.Stat(dropIn); return err == nil })
		c.createNode(t, "node-b", true)
		r := h.isolator(nil, "install", "--artifacts", h.tarball, "--node-name", "node-b", "--kubeconfig", c.kubeconfig, "--verify-timeout", "5s")
		if r.exit != 1 {
			t.Fatalf("install exit %d, want 1", r.exit)
		}
		n := c.node(t, "node-b")
		if v := n.Labels[nodestate.LabelRuntime]; v != "false" {
			t.Errorf("runtime label after a rollback = %q, want false", v)
		}
		if !hasStartupTaint(n) {
			t.Errorf("startup taint removed from a node that is not ready: %v", n.Spec.Taints)
		}
		if got := c.reasons(t, "node-b"); !slices.Contains(got, nodestate.ReasonRolledBack) {
			t.Errorf("events = %v, want %s", got, nodestate.ReasonRolledBack)
		}
	})

	t.Run("no kvm is reported and never labelled ready", func(t *testing.T) {
		h := newHost(t, rt)
		original := h.writeDefaultConfig()
		h.startContainerd(nil)
		c.createNode(t, "node-c", false)
		r := h.isolator(nil, "install", "--artifacts", h.tarball, "--node-name", "node-c", "--kubeconfig", c.kubeconfig, "--kvm-device", "/nonexistent/kvm")
		if r.exit != 1 || !strings.Contains(r.err, "cannot run Kata") {
			t.Fatalf("install exit %d: %s", r.exit, tail(r.err, 5))
		}
		if v := c.node(t, "node-c").Labels[nodestate.LabelRuntime]; v != "false" {
			t.Errorf("label = %q, want false", v)
		}
		if got := c.reasons(t, "node-c"); !slices.Equal(got, []string{nodestate.ReasonNoKVM}) {
			t.Errorf("events = %v", got)
		}
		if !bytes.Equal(h.config(), original) || h.starts() != 1 {
			t.Error("a node without KVM had its containerd touched")
		}
	})

	// kata-runtime check fails (the host can't run Kata): the node is never labelled
	// ready, an Event says why, and nothing of the install is left: no Kata under /opt,
	// containerd's config and process untouched.
	t.Run("kata-runtime check fails: unlabelled, an Event, nothing left", func(t *testing.T) {
		h := newHost(t, rt)
		original := h.writeDefaultConfig()
		h.startContainerd(nil)
		optBefore := tree(t, h.opt) // containerd's own /opt/containerd included
		c.createNode(t, "node-d", false)
		failing := releaseTarball(t, fakekata.Release{Version: "3.2.0", CheckFails: true})
		r := h.isolator(nil, "install", "--artifacts", failing, "--node-name", "node-d", "--kubeconfig", c.kubeconfig)
		if r.exit != 1 || !strings.Contains(r.err, "kata-runtime check failed") || !strings.Contains(r.err, "/dev/kvm not found (fake Kata release)") {
			t.Fatalf("install exit %d, want 1 with kata-runtime's error: %s", r.exit, tail(r.err, 5))
		}
		if v := c.node(t, "node-d").Labels[nodestate.LabelRuntime]; v != "false" {
			t.Errorf("label = %q, want false", v)
		}
		if got := c.reasons(t, "node-d"); !slices.Contains(got, nodestate.ReasonNoKVM) {
			t.Errorf("events = %v, want %s", got, nodestate.ReasonNoKVM)
		}
		if got := tree(t, h.opt); !slices.Equal(got, optBefore) {
			t.Errorf("/opt after the failed install = %v, want %v as before", got, optBefore)
		}
		if !bytes.Equal(h.config(), original) || h.starts() != 1 {
			t.Error("a failed check touched containerd")
		}
	})

	// A release without kata-runtime can't be checked: refused, unless the admin says
	// --skip-kata-check.
	t.Run("a release without kata-runtime needs --skip-kata-check", func(t *testing.T) {
		h := newHost(t, rt)
		h.writeDefaultConfig()
		h.startContainerd(nil)
		optBefore := tree(t, h.opt)
		c.createNode(t, "node-e", false)
		incomplete := releaseTarball(t, fakekata.Release{Version: "3.2.0", NoKataRuntime: true})
		r := h.isolator(nil, "install", "--artifacts", incomplete, "--node-name", "node-e", "--kubeconfig", c.kubeconfig)
		if r.exit != 1 || !strings.Contains(r.err, "ships no bin/kata-runtime") || !strings.Contains(r.err, "--skip-kata-check") {
			t.Fatalf("install exit %d, want 1 naming the missing kata-runtime: %s", r.exit, tail(r.err, 5))
		}
		if got := tree(t, h.opt); !slices.Equal(got, optBefore) {
			t.Errorf("/opt after the refused install = %v, want %v as before", got, optBefore)
		}
		if v := c.node(t, "node-e").Labels[nodestate.LabelRuntime]; v != "false" {
			t.Errorf("label = %q, want false", v)
		}
		h.mustIsolator("install", "--artifacts", incomplete, "--node-name", "node-e", "--kubeconfig", c.kubeconfig, "--skip-kata-check")
		waitLabel(t, c, "node-e", "true")
	})
}

// releaseTarball writes a fake Kata release into a directory of its own.
func releaseTarball(t *testing.T, r fakekata.Release) string {
	t.Helper()
	path, err := r.WriteTarball(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunSIGTERM checks the rollout-or-removal decision of `isolator node run`: while
// the DaemonSet selects the node, SIGTERM leaves everything in place (a rollout); once
// the node loses isolator.dev/kata=enabled or the DaemonSet is deleted, SIGTERM
// uninstalls. It also checks that run repairs a deleted drop-in.
func TestRunSIGTERM(t *testing.T) {
	c := startCluster(t)
	c.createDaemonSet(t)
	rt := runtimes(t)[0]
	h := newHost(t, rt)
	original := h.writeDefaultConfig()
	h.startContainerd(nil)
	c.createNode(t, "node-r", false)

	start := func() *runProcess { return h.startRun(t, c, "node-r") }

	// 1. Rollout: the DaemonSet still selects the node.
	p := start()
	waitLabel(t, c, "node-r", "true")
	// The DaemonSet's probes: live throughout, and ready once the pass that labelled
	// the node has ended.
	if code, body := p.probe(t, "/healthz"); code != http.StatusOK || body != "ok" {
		t.Errorf("GET /healthz = %d %q, want 200 ok", code, body)
	}
	waitFor(t, "/readyz to answer 200", func() bool { code, _ := p.probe(t, "/readyz"); return code == http.StatusOK })
	// Drift: someone deletes the drop-in; run puts it back and containerd serves kata again.
	dropIn := filepath.Join(h.etc, "conf.d", "isolator-kata.toml")
	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "drop-in repaired and kata served", func() bool {
		_, err := os.Stat(dropIn)
		st, qerr := cri.Query(context.Background(), h.endpoint())
		return err == nil && qerr == nil && st.Handlers["kata"]
	})
	// Drift: someone damages a Kata binary; run installs an intact copy and swaps
	// /opt/kata/current.
	before, err := os.Readlink(filepath.Join(h.opt, "kata", "current"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.opt, "kata", "bin", "kata-runtime"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "damaged artifacts replaced", func() bool {
		after, err := os.Readlink(filepath.Join(h.opt, "kata", "current"))
		return err == nil && after != before
	})
	waitFor(t, "event "+nodestate.ReasonDrift, func() bool { return slices.Contains(c.reasons(t, "node-r"), nodestate.ReasonDrift) })
	waitFor(t, "metrics of the repairs", func() bool {
		m := p.scrape(t)
		return strings.Contains(m, "isolator_node_ready 1") && strings.Contains(m, "isolator_node_drift_repairs_total 2") &&
			strings.Contains(m, `isolator_node_containerd_restarts_total{reason="install"} 2`)
	})
	p.terminate(t)
	if ok, _ := h.served(); !ok || c.node(t, "node-r").Labels[nodestate.LabelRuntime] != "true" {
		t.Fatal("a rollout SIGTERM removed isolator from the node")
	}

	// 2. Removal: the admin takes the node out (label no longer "enabled").
	p = start()
	setLabel(t, c, "node-r", nodestate.LabelEnabled, "disabled")
	p.terminate(t)
	if ok, _ := h.served(); ok {
		t.Error("kata still served after removal")
	}
	if _, set := c.node(t, "node-r").Labels[nodestate.LabelRuntime]; set {
		t.Error("runtime label still set after removal")
	}
	if !bytes.Equal(h.config(), original) {
		t.Error("config differs after removal")
	}

	// 3. Removal: the DaemonSet is deleted while the node stays opted in.
	setLabel(t, c, "node-r", nodestate.LabelEnabled, "enabled")
	p = start()
	waitLabel(t, c, "node-r", "true")
	if err := c.client.AppsV1().DaemonSets("isolator-system").Delete(context.Background(), "isolator-node", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	p.terminate(t)
	if ok, _ := h.served(); ok {
		t.Error("kata still served after the DaemonSet was deleted")
	}
	if !bytes.Equal(h.config(), original) {
		t.Error("config differs after the DaemonSet was deleted")
	}
}

type runProcess struct {
	cmd     *exec.Cmd
	pid     int
	stderr  *syncBuffer
	metrics string // URL of its /metrics
	probes  string // base URL of its /healthz and /readyz
}

// probe returns the status code and body of one of the process's probe endpoints.
func (p *runProcess) probe(t *testing.T, path string) (int, string) {
	t.Helper()
	code, body := httpGet(t, p.probes+path)
	return code, strings.TrimSpace(body)
}

// scrape returns the process's metrics text.
func (p *runProcess) scrape(t *testing.T) string {
	t.Helper()
	_, body := httpGet(t, p.metrics)
	return body
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// syncBuffer is a bytes.Buffer safe for the exec copier and the test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startRun starts `isolator node run` in the host's namespace.
func (h *host) startRun(t *testing.T, c *cluster, node string, extra ...string) *runProcess {
	t.Helper()
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		_ = ln.Close()
	}
	addr, probes := addrs[0], addrs[1]
	args := append([]string{"node", "run"}, h.defaultFlags()...)
	args = append(args, "--artifacts", h.tarball, "--node-name", node, "--kubeconfig", c.kubeconfig,
		"--interval", "300ms", "--min-restart-interval", "0s", "--metrics-bind-address", addr, "--health-probe-bind-address", probes)
	cmd := h.command(context.Background(), isolatorBin, append(args, extra...)...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &runProcess{cmd: cmd, pid: cmd.Process.Pid, stderr: stderr, metrics: "http://" + addr + "/metrics", probes: "http://" + probes}
	t.Cleanup(func() { _ = syscall.Kill(p.pid, syscall.SIGKILL); _ = cmd.Wait() })
	// Its SIGTERM handler is in place once it logs that it runs.
	waitFor(t, "isolator node run to start", func() bool { return strings.Contains(stderr.String(), "node bootstrapper running") })
	return p
}

// terminate sends SIGTERM, as the kubelet does, and waits for a clean exit.
func (p *runProcess) terminate(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(p.pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("isolator node run exited with %v\n%s", err, tail(p.stderr.String(), 20))
	}
}

func setLabel(t *testing.T, c *cluster, node, key, value string) {
	t.Helper()
	n := c.node(t, node)
	n.Labels[key] = value
	if _, err := c.client.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitLabel(t *testing.T, c *cluster, node, want string) {
	t.Helper()
	waitFor(t, "label "+nodestate.LabelRuntime+"="+want, func() bool {
		return c.node(t, node).Labels[nodestate.LabelRuntime] == want
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForLong(t, what, 60*time.Second, cond)
}

// waitForLong is waitFor with its own timeout, for steps a real node takes longer over.
func waitForLong(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		return cond(), nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// applyRBAC creates the RBAC objects of a manifest file as they ship.
func applyRBAC(t *testing.T, client kubernetes.Interface, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, doc := range strings.Split(string(data), "\n---") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			_, err = client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRole:
			_, err = client.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.ClusterRoleBinding:
			_, err = client.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.Role:
			_, err = client.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		case *rbacv1.RoleBinding:
			_, err = client.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
		default:
			t.Fatalf("%s: unexpected %T", file, obj)
		}
		if err != nil {
			t.Fatalf("%s: create %T: %v", file, obj, err)
		}
	}
}
