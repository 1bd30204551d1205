//go:build e2e

package node_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/ociimage"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

// newPodHost is a test node that can start pod sandboxes as a kubelet's node can: a
// harness.Node (containerd 2.4 in network and mount namespaces of its own, Debian's CNI
// plugins and runc, the pause image imported). The Kata release is rel, whose shim
// decides whether sandboxes start.
func newPodHost(t *testing.T, rel fakekata.Release) *host {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp("", "isolator-node-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	n, err := harness.StartNode(context.Background(), harness.NodeOptions{Dir: dir})
	t.Cleanup(func() {
		if n != nil {
			_ = n.Stop()
		}
		if t.Failed() {
			t.Logf("containerd log (last 30 lines):\n%s", harness.LogTail(filepath.Join(dir, "containerd.log"), 30))
		}
		_ = os.RemoveAll(dir)
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &host{
		t: t, dir: dir, etc: n.Path("/etc/containerd"), opt: n.Path("/opt"),
		sock: n.Socket(), containerd: n.Containerd(), kvm: n.KVMDevice(), node: n,
	}
	if h.tarball, err = rel.WriteTarball(dir); err != nil {
		t.Fatal(err)
	}
	return h
}

// importImage loads an OCI archive into the pod host's containerd (k8s.io namespace).
func (h *host) importImage(archive string) {
	h.t.Helper()
	if err := h.node.ImportImage(context.Background(), archive); err != nil {
		h.t.Fatal(err)
	}
}

// criClient connects to the host's containerd over CRI, as the kubelet does; timeout
// bounds each call. The client closes when the test ends.
func (h *host) criClient(t *testing.T, timeout time.Duration) internalapi.RuntimeService {
	t.Helper()
	svc, err := h.node.CRI(context.Background(), timeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close(context.Background()) })
	return svc
}

// sandboxes lists the pod sandboxes containerd knows, by name.
func (h *host) sandboxes() []string {
	h.t.Helper()
	list, err := h.criClient(h.t, 10*time.Second).ListPodSandbox(context.Background(), &runtimeapi.PodSandboxFilter{})
	if err != nil {
		h.t.Fatal(err)
	}
	var names []string
	for _, s := range list {
		names = append(names, s.GetMetadata().GetName()+"/"+s.GetState().String())
	}
	return names
}

// standIn is the stand-in Kata shim (harness.StandInShim).
func standIn(t *testing.T) []byte {
	t.Helper()
	data, err := harness.StandInShim()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestSandboxCheckLabels: with a shim that starts sandboxes, `isolator node install`
// starts a throwaway pod sandbox with the kata handler through CRI, removes it, and
// only then reports the node ready.
func TestSandboxCheckLabels(t *testing.T) {
	h := newPodHost(t, fakekata.Release{Version: "4.1.0", Shim: standIn(t)})
	r := h.mustIsolator("install", "--artifacts", h.tarball)
	if !strings.Contains(r.out, "kata sandbox started and removed in") {
		t.Fatalf("install did not start a sandbox:\n%s\n%s", r.out, tail(r.err, 20))
	}
	t.Logf("%s", strings.TrimSpace(r.out))
	if got := h.sandboxes(); len(got) != 0 {
		t.Errorf("sandboxes left behind: %v", got)
	}
	log, _ := os.ReadFile(filepath.Join(h.dir, "containerd.log"))
	if !strings.Contains(string(log), `RunPodSandbox for name:\"isolator-sandbox-check\"`) ||
		!strings.Contains(string(log), "returns sandbox id") {
		t.Errorf("containerd's log shows no started sandbox:\n%s", tail(string(log), 30))
	}
	// A second run with nothing changed starts no sandbox when the node is labelled;
	// without a cluster there is no label to trust, so it checks again.
	r = h.mustIsolator("install", "--artifacts", h.tarball)
	if !strings.Contains(r.out, "kata sandbox started and removed in") {
		t.Errorf("second install without a cluster: %s", r.out)
	}
}

// TestSandboxCheckFails: with a shim that cannot start a VM, containerd serves the kata
// handler (so every earlier check passes), but the node is never labelled: the label
// stays false, a KataSandboxFailed Event carries containerd's error, the metric counts
// each failure, and `run` tries again with backoff. Replacing the release with one whose
// shim works labels the node.
func TestSandboxCheckFails(t *testing.T) {
	c := startCluster(t)
	h := newPodHost(t, fakekata.Release{Version: "4.1.0"})
	c.createNode(t, "n-fail", false)

	// install: exits non-zero, saying why, and containerd serves the handler.
	r := h.isolator(nil, "install", "--artifacts", h.tarball)
	if r.exit == 0 || !strings.Contains(r.err, "a pod sandbox with it did not start") || !strings.Contains(r.err, fakekata.ShimFailure) {
		t.Fatalf("install with a failing shim: exit %d, want a failure quoting the shim\nstderr: %s", r.exit, tail(r.err, 10))
	}
	if served, _ := h.served(); !served {
		t.Fatal("containerd does not serve the kata handler: the sandbox check was not what failed")
	}

	p := h.startRun(t, c, "n-fail")
	waitFor(t, "two failed sandbox checks", func() bool {
		return strings.Contains(p.scrape(t), `isolator_node_sandbox_checks_total{result="failure"} 2`)
	})
	n := c.node(t, "n-fail")
	if v := n.Labels[nodestate.LabelRuntime]; v != "false" {
		t.Errorf("label %s=%q after failed sandbox checks, want false", nodestate.LabelRuntime, v)
	}
	events, err := c.client.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=n-fail"})
	if err != nil {
		t.Fatal(err)
	}
	var failed *corev1.Event
	for i, e := range events.Items {
		if e.Reason == nodestate.ReasonSandboxFailed {
			failed = &events.Items[i]
		}
	}
	if failed == nil || failed.Type != corev1.EventTypeWarning || !strings.Contains(failed.Message, fakekata.ShimFailure) {
		t.Fatalf("no Warning %s Event quoting containerd's error; events: %+v", nodestate.ReasonSandboxFailed, events.Items)
	}
	t.Logf("Event %s: %s", failed.Reason, failed.Message)
	if code, body := p.probe(t, "/readyz"); code == 200 {
		t.Errorf("/readyz = %d %s while the sandbox check fails", code, body)
	}
	if got := h.sandboxes(); len(got) != 0 {
		t.Errorf("sandboxes left behind by failed checks: %v", got)
	}
	p.terminate(t)

	// The node can run Kata after all (a fixed release): the next run labels it.
	if h.tarball, err = (fakekata.Release{Version: "4.1.1", Shim: standIn(t)}).WriteTarball(h.dir); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	p = h.startRun(t, c, "n-fail")
	waitLabel(t, c, "n-fail", "true")
	t.Logf("labelled %s=true %v after the run started", nodestate.LabelRuntime, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(p.scrape(t), `isolator_node_sandbox_checks_total{result="success"} 1`) {
		t.Errorf("metrics after the label:\n%s", grepLines(p.scrape(t), "isolator_node_sandbox"))
	}
	p.terminate(t)
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// staticIsolator builds the isolator binary as the images carry it: static, for linux,
// with the webhook image's tags when webhookOnly.
func staticIsolator(t *testing.T, dir string, webhookOnly bool) string {
	t.Helper()
	out := filepath.Join(dir, "isolator")
	args := []string{"build", "-trimpath", "-o", out}
	if webhookOnly {
		out += "-webhook"
		args = []string{"build", "-trimpath", "-tags", "webhookonly", "-o", out}
	}
	cmd := exec.Command("go", append(args, "github.com/isolator-dev/isolator/cmd/isolator")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v: %s", out, err, b)
	}
	return out
}

// runOnce runs one container of image with args in a new pod sandbox of handler, through
// CRI as the kubelet does, waits for it to exit, and returns its output and exit code.
// The sandbox and container are removed afterwards.
func (h *host) runOnce(handler, image string, args ...string) (string, int32) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	svc := h.criClient(h.t, 30*time.Second)
	h.runs++
	name := fmt.Sprintf("run-%d-%s", h.runs, handler)
	logs := filepath.Join(h.dir, "pod-logs", name)
	if err := os.MkdirAll(logs, 0o755); err != nil {
		h.t.Fatal(err)
	}
	sb := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: name, Namespace: "e2e", Uid: name},
		Hostname:     name,
		LogDirectory: logs,
		Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
			NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER},
		}},
	}
	id, err := svc.RunPodSandbox(ctx, sb, handler)
	if err != nil {
		h.t.Fatalf("RunPodSandbox with %s: %v", handler, err)
	}
	defer func() {
		_ = svc.StopPodSandbox(context.Background(), id)
		_ = svc.RemovePodSandbox(context.Background(), id)
	}()
	cid, err := svc.CreateContainer(ctx, id, &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "main"},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Args:     args,
		LogPath:  "main.log",
	}, sb)
	if err != nil {
		h.t.Fatalf("CreateContainer %s: %v", image, err)
	}
	if err := svc.StartContainer(ctx, cid); err != nil {
		h.t.Fatalf("StartContainer %s: %v", image, err)
	}
	var st *runtimeapi.ContainerStatus
	waitFor(h.t, image+" to exit", func() bool {
		resp, err := svc.ContainerStatus(ctx, cid, false)
		if err != nil {
			return false
		}
		st = resp.GetStatus()
		return st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED
	})
	data, err := os.ReadFile(filepath.Join(logs, "main.log"))
	if err != nil {
		h.t.Fatal(err)
	}
	return harness.CRILogText(data), st.GetExitCode()
}

// TestImagesRun: the images `make images` builds (internal/ociimage, the Dockerfile's
// contract) load into a node's containerd and run there: the webhook image with the
// runc handler, the node image in a kata pod sandbox (the stand-in shim). Each prints
// its version, which proves the binary, the entrypoint and the user work together; the
// node image also finds its Kata release where the DaemonSet's --artifacts says.
func TestImagesRun(t *testing.T) {
	h := newPodHost(t, fakekata.Release{Version: "4.1.0", Shim: standIn(t)})
	h.mustIsolator("install", "--artifacts", h.tarball)

	dir := t.TempDir()
	kata, err := (fakekata.Release{Version: "4.1.0"}).WriteDir(filepath.Join(dir, "kata"))
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []struct {
		spec ociimage.Spec
		file string
	}{
		{ociimage.Webhook("localhost/isolator-webhook:e2e", staticIsolator(t, dir, true), runtime.GOARCH), "webhook.oci.tar"},
		{ociimage.Node("localhost/isolator-node:e2e", staticIsolator(t, dir, false), kata, runtime.GOARCH), "node.oci.tar"},
	} {
		built, err := ociimage.Build(img.spec)
		if err != nil {
			t.Fatal(err)
		}
		archive := filepath.Join(dir, img.file)
		if err := ociimage.WriteArchive(archive, img.spec.Ref, built); err != nil {
			t.Fatal(err)
		}
		h.importImage(archive)
	}

	out, code := h.runOnce("runc", "localhost/isolator-webhook:e2e", "version")
	if code != 0 || !strings.HasPrefix(out, "isolator ") {
		t.Errorf("webhook image, runc: exit %d, output %q", code, out)
	}
	t.Logf("webhook image (runc): %s", out)
	out, code = h.runOnce("kata", "localhost/isolator-node:e2e", "version")
	if code != 0 || !strings.HasPrefix(out, "isolator ") {
		t.Errorf("node image, kata stand-in: exit %d, output %q", code, out)
	}
	t.Logf("node image (kata stand-in): %s", out)
	// The node image's Kata release is where the DaemonSet's --artifacts says: an install
	// into a scratch host root inside the container stages it and gets as far as
	// kata-runtime check, which runs chrooted into the host and finds no shell there.
	out, code = h.runOnce("kata", "localhost/isolator-node:e2e", "node", "install", "--host-root=/tmp/host",
		"--artifacts="+ociimage.KataPath, "--kvm-device=/dev/null", "--restart=none", "--skip-sandbox-check")
	if code != 1 || !strings.Contains(out, "kata-runtime check failed") {
		t.Errorf("node image, install from its own release: exit %d, output %q", code, out)
	}
	t.Logf("node image, install from its own release into a scratch root: %s", lastLine(out))
}
