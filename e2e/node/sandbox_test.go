//go:build e2e

package node_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"golang.org/x/sys/unix"

	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/internal/ociimage"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

// pauseRef is the pod hosts' sandbox image: built here, imported into containerd, and
// pinned in its config, so that no test pulls from a registry.
const pauseRef = "localhost/isolator-e2e/pause:1"

// podSubnet is the pod hosts' pod range. It exists only inside the host's own network
// namespace, which has no route anywhere else.
const podSubnet = "10.244.0.0/24"

// podHostConfig is the node admin's containerd 2.x config on a pod host: the CNI
// configuration, network namespaces under containerd's own state directory (not the
// machine's /run/netns) and the local pause image. restrict_oom_score_adj keeps pods'
// OOM scores at or above containerd's own, as containerd does in kind and other nested
// setups: the machines the suites run on refuse a lower score (the sandbox's -998).
const podHostConfig = `version = 3

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '%s'

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ['/opt/cni/bin']
  conf_dir = '%s'
`

// cniConfig is the pod network: Debian's bridge, host-local and loopback plugins,
// with the address leases kept in the test's directory. Pods route everything to the
// bridge; the node's namespace, which has no default route, takes it no further.
const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "isolator-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "isolator0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q,
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
`

// newPodHost is a test node that can start pod sandboxes as a kubelet's node can:
// containerd 2.4 in a network namespace of its own (so the CNI bridge and every pod
// address exist only there; no route leads off the machine), Debian's CNI plugins and
// runc, and the pause image imported into containerd's k8s.io namespace. The Kata
// release is rel, whose shim decides whether sandboxes start.
func newPodHost(t *testing.T, rel fakekata.Release) *host {
	t.Helper()
	var c2 runtimeSpec
	for _, rt := range runtimes(t) {
		if rt.name == "containerd-2.4" {
			c2 = rt
		}
	}
	h := newHost(t, c2)
	// The stand-in for /dev/kvm is a character device (/dev/null's numbers) here, so
	// that the DaemonSet's pod opens it read-write through its read-only view of the
	// host, as it opens the real /dev/kvm.
	if err := os.Remove(h.kvm); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(h.kvm, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	var err error
	if h.tarball, err = rel.WriteTarball(h.dir); err != nil {
		t.Fatal(err)
	}

	// The node's namespaces live as long as a process holds them. In the mount
	// namespace the test's directories stand for the node's /etc/containerd, /opt, /run
	// (containerd's NRI socket, shim sockets, runc state), /var/lib (CNI's cache, the
	// kubelet) and /var/log (pod logs); the network namespace has only its loopback.
	binds := fmt.Sprintf("mount --bind %s /etc/containerd && mount --bind %s /opt && mount --bind %s /run && "+
		"mount --bind %s /var/lib && mount --bind %s /var/log", h.etc, h.opt, h.run(), filepath.Join(h.dir, "var-lib"), filepath.Join(h.dir, "var-log"))
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "--net", "--", "sh", "-c",
		binds+" && ip link set lo up && echo ready && exec sleep infinity")
	ready, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		t.Fatalf("node namespaces: %v", err)
	}
	t.Cleanup(func() {
		// Whatever still runs in the node (shims, pods) goes with it.
		killNamespace(fmt.Sprintf("/proc/%d/ns/mnt", holder.Process.Pid))
		_ = holder.Process.Kill()
		_ = holder.Wait()
	})
	if line, err := bufio.NewReader(ready).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("node namespaces: %q %v: %s", line, err, stderr.String())
	}
	h.holder = holder
	// No route off the machine: the namespace has its loopback and, once a pod starts,
	// the bridge to the pod range; nothing else.
	if out, err := exec.Command("nsenter", "--net="+h.ns("net"), "ip", "route", "get", "1.1.1.1").CombinedOutput(); err == nil {
		t.Fatalf("the pod host's network namespace routes off the machine: %s", out)
	}

	bin := filepath.Join(h.opt, "cni", "bin") // /opt/cni/bin on the node
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if err := os.Symlink(filepath.Join("/usr/lib/cni", p), filepath.Join(bin, p)); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(h.dir, "cni-conf")
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(conf, "10-isolator-e2e.conflist"), fmt.Appendf(nil, cniConfig, podSubnet, filepath.Join(h.dir, "cni-ipam")), 0o644); err != nil {
		t.Fatal(err)
	}
	h.writeConfig(fmt.Appendf(nil, podHostConfig, pauseRef, conf))
	h.startContainerd(nil)
	h.importImage(pauseArchive(t))
	return h
}

// killNamespace kills every process in the mount namespace mnt (a /proc/<pid>/ns/mnt
// path), so that no shim or container of a test node outlives the test.
func killNamespace(mnt string) {
	want, err := os.Readlink(mnt)
	if err != nil {
		return
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && got == want {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

var pause struct {
	once    sync.Once
	archive string
	err     error
}

// pauseArchive builds the pause image once per run of the suite.
func pauseArchive(t *testing.T) string {
	t.Helper()
	pause.once.Do(func() {
		dir, err := os.MkdirTemp("", "isolator-pause-")
		if err != nil {
			pause.err = err
			return
		}
		binary := filepath.Join(dir, "pause")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binary, "github.com/isolator-dev/isolator/internal/testfixtures/pause")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			pause.err = fmt.Errorf("build the pause binary: %w: %s", err, out)
			return
		}
		img, err := ociimage.Build(ociimage.Spec{
			Files:      []ociimage.File{{Path: "/pause", Source: binary}},
			Entrypoint: []string{"/pause"}, User: "65535:65535", Arch: runtime.GOARCH,
		})
		if err == nil {
			pause.archive = filepath.Join(dir, "pause.oci.tar")
			err = ociimage.WriteArchive(pause.archive, pauseRef, img)
		}
		pause.err = err
	})
	if pause.err != nil {
		t.Fatalf("pause image: %v", pause.err)
	}
	return pause.archive
}

// importImage loads an OCI archive into containerd's k8s.io namespace, where CRI
// (and so the kubelet) looks for images.
func (h *host) importImage(archive string) {
	h.t.Helper()
	ctr := filepath.Join(toolsBin, "ctr2")
	out, err := exec.Command(ctr, "--address", h.sock, "--namespace", "k8s.io", "images", "import",
		"--platform", "linux/"+runtime.GOARCH, archive).CombinedOutput()
	if err != nil {
		h.t.Fatalf("ctr images import %s: %v: %s", archive, err, out)
	}
}

// criClient connects to the host's containerd over CRI, as the kubelet does; timeout
// bounds each call. The client closes when the test ends.
func (h *host) criClient(t *testing.T, timeout time.Duration) internalapi.RuntimeService {
	t.Helper()
	svc, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint(h.endpoint()).WithConnectionTimeout(timeout).Build(context.Background())
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

// standIn is the stand-in Kata shim (e2e/tools/containerd/kata-standin), built by
// make tools: containerd's runc shim under Kata's name. It stands for the Kata VM,
// which cannot start on these machines.
func standIn(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(toolsBin, "containerd-shim-kata-standin"))
	if err != nil {
		t.Fatalf("the stand-in Kata shim is not built (%v): run make tools", err)
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
	return criLogText(data), st.GetExitCode()
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
