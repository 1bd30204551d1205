package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"

	"golang.org/x/sys/unix"

	"github.com/isolator-dev/isolator/bootstrap/cri"
	"github.com/isolator-dev/isolator/internal/ociimage"
)

const (
	// PauseImage is a node's sandbox image: built from internal/testfixtures/pause,
	// imported into containerd and pinned in its config, so that nothing is pulled.
	PauseImage = "localhost/isolator-e2e/pause:1"
	// PodSubnet is a node's pod range. It exists only inside the node's own network
	// namespace, which has no route anywhere else.
	PodSubnet = "10.244.0.0/24"
)

// nodeContainerdConfig is the node admin's containerd 2.x config: the CNI
// configuration, network namespaces under containerd's own state directory (not the
// machine's /run/netns) and the local pause image. restrict_oom_score_adj keeps pods'
// OOM scores at or above containerd's own, as containerd does in kind and other nested
// setups: the machines this runs on refuse a lower score (the sandbox's -998).
const nodeContainerdConfig = `version = 3

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
// with the address leases kept in the node's directory. Pods route everything to the
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

// kubeletConfig is a node's kubelet. Settings that only this environment needs, not
// advice for clusters:
//   - failCgroupV1: false. The machines this runs on use cgroup v1, which kubelet 1.37
//     refuses by default.
//   - cgroupsPerQOS: false and no enforceNodeAllocatable, so the kubelet creates no
//     kubepods hierarchy in the machine's cgroups.
//   - oomScoreAdj: 0, resolvConf "", the eviction thresholds at 1%: the machine refuses
//     a negative OOM score, pods resolve no names, and a shared disk must not evict them.
//
// It listens on loopback only and trusts only the control plane CA's client certificates.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
containerRuntimeEndpoint: %q
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %q}
authorization: {mode: AlwaysAllow}
resolvConf: ""
oomScoreAdj: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "1Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
`

// nodePaths are the node's own directories and the directory of Node.Dir standing for
// each, bound in the node's mount namespace.
var nodePaths = []struct{ node, dir string }{
	{"/etc/containerd", "etc-containerd"},
	{"/opt", "opt"},
	{"/run", "run"},
	{"/var/lib", "var-lib"},
	{"/var/log", "var-log"},
}

// NodeOptions configures StartNode.
type NodeOptions struct {
	// Dir holds everything of the node; it is created if missing. The caller removes
	// it after Stop.
	Dir string
	// Containerd is the containerd 2.x binary; empty means containerd2 from ToolsBin
	// (make tools). Its runc shim is found next to it.
	Containerd string
}

// Node is a Kubernetes node on this machine: containerd 2.x (with Debian's runc and
// CNI plugins) and, after StartKubelet, a real kubelet. It needs root.
//
// Its processes share one mount namespace, held by a process, where directories under
// Dir stand for the node's /etc/containerd, /opt, /run, /var/lib and /var/log: the
// machine's own are never touched. containerd and its pods share one network namespace
// with only a loopback and the pods' bridge on PodSubnet, so no packet from a pod can
// leave the machine; the kubelet runs in the machine's network namespace, where the
// control plane listens. A character device at KVMDevice stands for /dev/kvm (the Kata
// VM cannot start on these machines).
type Node struct {
	dir        string
	containerd string
	holder     *exec.Cmd
	sup        *Supervisor
	kubelet    *Process
}

// StartNode starts the node's namespaces and containerd, and imports the pause image.
// On error nothing is left running.
func StartNode(ctx context.Context, opts NodeOptions) (n *Node, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("a node needs root (mount and network namespaces, containerd)")
	}
	if opts.Containerd == "" {
		if opts.Containerd, err = Tool("containerd2"); err != nil {
			return nil, err
		}
	}
	for _, p := range []string{"unshare", "nsenter", "ip", "/usr/sbin/runc", "/usr/lib/cni/bridge"} {
		if _, err := exec.LookPath(p); err != nil {
			return nil, fmt.Errorf("a node needs %s (Debian's util-linux, iproute2, runc and containernetworking-plugins): %w", p, err)
		}
	}
	n = &Node{dir: opts.Dir, containerd: opts.Containerd}
	defer func() {
		if err != nil {
			_ = n.Stop()
			n = nil
		}
	}()
	dirs := []string{"root", "state", "cni-conf", "opt/cni/bin"}
	for _, p := range nodePaths {
		dirs = append(dirs, p.dir)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o755); err != nil {
			return n, err
		}
	}
	// A character device (/dev/null's numbers), so that a pod opens it read-write
	// through a read-only view of the node, as it opens the real /dev/kvm.
	if err := unix.Mknod(n.KVMDevice(), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil && !errors.Is(err, os.ErrExist) {
		return n, fmt.Errorf("the /dev/kvm stand-in: %w", err)
	}
	if err := n.startNamespaces(); err != nil {
		return n, err
	}
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if err := os.Symlink(filepath.Join("/usr/lib/cni", p), n.Path("/opt/cni/bin/"+p)); err != nil && !errors.Is(err, os.ErrExist) {
			return n, err
		}
	}
	conf := filepath.Join(n.dir, "cni-conf")
	if err := os.WriteFile(filepath.Join(conf, "10-isolator-e2e.conflist"), fmt.Appendf(nil, cniConfig, PodSubnet, filepath.Join(n.dir, "cni-ipam")), 0o644); err != nil {
		return n, err
	}
	if err := os.WriteFile(n.Path("/etc/containerd/config.toml"), fmt.Appendf(nil, nodeContainerdConfig, PauseImage, conf), 0o644); err != nil {
		return n, err
	}
	if n.sup, err = Supervise(n.ContainerdLog(), n.containerdCommand); err != nil {
		return n, err
	}
	if _, err := cri.WaitFor(ctx, n.Endpoint(), "kata", false, 30*time.Second); err != nil {
		return n, fmt.Errorf("the node's containerd did not serve CRI: %w; last lines of %s:\n%s", err, n.ContainerdLog(), LogTail(n.ContainerdLog(), logTailLines))
	}
	pause, err := GoImage(ctx, n.dir, "github.com/isolator-dev/isolator/internal/testfixtures/pause", PauseImage, "65535:65535")
	if err != nil {
		return n, fmt.Errorf("the pause image: %w", err)
	}
	return n, n.ImportImage(ctx, pause)
}

// startNamespaces starts the process that holds the node's mount and network
// namespaces, and checks that the network namespace routes nowhere.
func (n *Node) startNamespaces() error {
	var binds []string
	for _, p := range nodePaths {
		binds = append(binds, fmt.Sprintf("mount --bind %s %s", filepath.Join(n.dir, p.dir), p.node))
	}
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "--net", "--", "sh", "-c",
		strings.Join(binds, " && ")+" && ip link set lo up && echo ready && exec sleep infinity")
	holder.SysProcAttr = sysProcAttr()
	ready, err := holder.StdoutPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	holder.Stderr = &stderr
	if err := holder.Start(); err != nil {
		return fmt.Errorf("the node's namespaces: %w", err)
	}
	n.holder = holder
	line, err := bufio.NewReader(ready).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the node's namespaces: %w: %s", err, stderr.String())
	}
	if line != "ready\n" {
		return fmt.Errorf("the node's namespaces: %q: %s", line, stderr.String())
	}
	if out, err := exec.Command("nsenter", "--net="+n.Namespace("net"), "ip", "route", "get", "1.1.1.1").CombinedOutput(); err == nil {
		return fmt.Errorf("the node's network namespace routes off the machine: %s", out)
	}
	return nil
}

// containerdCommand is the node's containerd, as its supervisor starts it.
func (n *Node) containerdCommand() *exec.Cmd {
	cmd := exec.Command("nsenter", "--mount="+n.Namespace("mnt"), "--net="+n.Namespace("net"), "--", n.containerd,
		"--config", "/etc/containerd/config.toml", "--root", filepath.Join(n.dir, "root"),
		"--state", filepath.Join(n.dir, "state"), "--address", n.Socket())
	// The runc shim built with containerd 2.x (make tools), not Debian's 1.6 one in
	// /usr/bin, which speaks an older start protocol.
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(n.containerd)+":"+os.Getenv("PATH"))
	return cmd
}

// Dir is the node's directory.
func (n *Node) Dir() string { return n.dir }

// Path is where the machine sees the node's path p (under /etc/containerd, /opt,
// /run, /var/lib or /var/log).
func (n *Node) Path(p string) string {
	for _, np := range nodePaths {
		if rel, ok := strings.CutPrefix(p, np.node); ok && (rel == "" || rel[0] == '/') {
			return filepath.Join(n.dir, np.dir, rel)
		}
	}
	panic(fmt.Sprintf("harness: %s is not a node path (%v)", p, nodePaths))
}

// Socket is containerd's socket; Endpoint is the same as a CRI endpoint.
func (n *Node) Socket() string   { return filepath.Join(n.dir, "containerd.sock") }
func (n *Node) Endpoint() string { return "unix://" + n.Socket() }

// KVMDevice is the device node that stands for /dev/kvm.
func (n *Node) KVMDevice() string { return filepath.Join(n.dir, "kvm") }

// Containerd is the containerd binary the node runs.
func (n *Node) Containerd() string { return n.containerd }

// ContainerdLog is the log of every containerd the node started.
func (n *Node) ContainerdLog() string { return filepath.Join(n.dir, "containerd.log") }

// ContainerdStarts is how many times containerd was started (1, plus one per restart).
func (n *Node) ContainerdStarts() int { return n.sup.Starts() }

// PID is the process holding the node's namespaces.
func (n *Node) PID() int { return n.holder.Process.Pid }

// Namespace is the path of one of the node's namespaces ("mnt" or "net").
func (n *Node) Namespace(kind string) string { return fmt.Sprintf("/proc/%d/ns/%s", n.PID(), kind) }

// Command runs name with args in the node's mount namespace (and the machine's
// network namespace), as the DaemonSet's isolator runs there.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--mount=" + n.Namespace("mnt"), "--", name}, args...)...)
}

// ImportImage loads an OCI archive into containerd's k8s.io namespace, where CRI (and
// so the kubelet) looks for images.
func (n *Node) ImportImage(ctx context.Context, archive string) error {
	return n.ctr(ctx, "import", "--platform", "linux/"+runtime.GOARCH, archive)
}

// TagImage gives the imported image ref more names, so that pods naming any of them
// run it without a pull.
func (n *Node) TagImage(ctx context.Context, ref string, tags ...string) error {
	if len(tags) == 0 {
		return nil
	}
	return n.ctr(ctx, append([]string{"tag", "--force", ref}, tags...)...)
}

// ctr runs `ctr images <args>` against the node's containerd, in k8s.io.
func (n *Node) ctr(ctx context.Context, args ...string) error {
	ctr, err := Tool("ctr2")
	if err != nil {
		return err
	}
	full := append([]string{"--address", n.Socket(), "--namespace", "k8s.io", "images"}, args...)
	if out, err := exec.CommandContext(ctx, ctr, full...).CombinedOutput(); err != nil {
		return fmt.Errorf("ctr images %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// StandInShim is the stand-in for Kata's containerd-shim-kata-v2, built by make tools
// from e2e/tools/containerd/kata-standin: containerd's runc shim under Kata's name,
// dropping Kata's options. It stands for the Kata VM, which cannot start on these
// machines: a sandbox started with the kata handler then runs in runc containers.
func StandInShim() ([]byte, error) {
	path, err := Tool("containerd-shim-kata-standin")
	if err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

// GoImage builds Go package pkg as a static binary into dir and wraps it in an image
// ref whose entrypoint is that binary, running as user. It returns the OCI archive.
func GoImage(ctx context.Context, dir, pkg, ref, user string, args ...string) (string, error) {
	name := filepath.Base(pkg)
	binary := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", binary, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", pkg, err, out)
	}
	img, err := ociimage.Build(ociimage.Spec{
		Files:      []ociimage.File{{Path: "/" + name, Source: binary}},
		Entrypoint: append([]string{"/" + name}, args...), User: user, Arch: runtime.GOARCH,
	})
	if err != nil {
		return "", err
	}
	archive := filepath.Join(dir, name+".oci.tar")
	return archive, ociimage.WriteArchive(archive, ref, img)
}

// CRI connects to the node's containerd over CRI, as the kubelet does; timeout
// bounds each call. The caller closes it.
func (n *Node) CRI(ctx context.Context, timeout time.Duration) (internalapi.RuntimeService, error) {
	return remote.NewRemoteRuntimeServiceBuilder().WithEndpoint(n.Endpoint()).WithConnectionTimeout(timeout).Build(ctx)
}

// PodHandler is the runtime handler containerd started the sandbox of the pod with
// uid with: what really ran it, whatever the pod asked for.
func (n *Node) PodHandler(ctx context.Context, uid string) (string, error) {
	svc, err := n.CRI(ctx, 10*time.Second)
	if err != nil {
		return "", err
	}
	defer func() { _ = svc.Close(ctx) }()
	list, err := svc.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{"io.kubernetes.pod.uid": uid}})
	if err != nil {
		return "", err
	}
	if len(list) == 0 {
		return "", fmt.Errorf("no pod sandbox of pod %s on the node", uid)
	}
	return list[0].GetRuntimeHandler(), nil
}

// StartKubelet runs a real kubelet for the node, registering Node name with the
// control plane, and waits until the Node is Ready. It runs in the node's mount
// namespace, with containerd (it mounts pod volumes there), and in the machine's
// network namespace, where the apiserver listens. Stop ends it.
func (n *Node) StartKubelet(ctx context.Context, cp *ControlPlane, name string) error {
	bin, err := Tool("kubelet")
	if err != nil {
		return err
	}
	kc, err := cp.UserKubeconfig("system:node:"+name, "system:nodes")
	if err != nil {
		return err
	}
	ports, err := FreePorts(1)
	if err != nil {
		return err
	}
	config := filepath.Join(n.dir, "kubelet.yaml")
	data := fmt.Sprintf(kubeletConfig, n.Endpoint(), ports[0], cp.pki("ca.crt"))
	if err := os.WriteFile(config, []byte(data), 0o644); err != nil {
		return err
	}
	n.kubelet, err = StartProcess(ProcessSpec{
		Name: "kubelet", Path: "nsenter",
		Args: []string{"--mount=" + n.Namespace("mnt"), "--", bin, "--config=" + config, "--kubeconfig=" + kc,
			"--hostname-override=" + name, "--v=2"},
		LogPath: n.KubeletLog(),
	})
	if err != nil {
		return err
	}
	err = WaitFor(ctx, 2*time.Minute, "the kubelet's Node "+name+" to be Ready", func(ctx context.Context) (bool, error) {
		node, err := cp.Client().CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("%w; last lines of %s:\n%s", err, n.KubeletLog(), LogTail(n.KubeletLog(), logTailLines))
	}
	return nil
}

// PodOutput is what the first run of a pod's container printed, from the log file the
// kubelet keeps under the node's /var/log/pods.
func (n *Node) PodOutput(pod *corev1.Pod, container string) (string, error) {
	data, err := os.ReadFile(filepath.Join(n.Path("/var/log/pods"), fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), container, "0.log"))
	if err != nil {
		return "", err
	}
	return CRILogText(data), nil
}

// CRILogText is the text of a CRI container log, whose lines are
// "<time> <stream> <tag> <text>".
func CRILogText(data []byte) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if f := strings.SplitN(l, " ", 4); len(f) == 4 {
			out = append(out, f[3])
		}
	}
	return strings.Join(out, "\n")
}

// KubeletLog is the kubelet's log.
func (n *Node) KubeletLog() string { return filepath.Join(n.dir, "kubelet.log") }

// Stop ends the kubelet, containerd and every process left in the node (shims, pods),
// and releases its namespaces. It leaves Dir for the caller to read or remove, and may
// be called more than once.
func (n *Node) Stop() error {
	var err error
	if n.kubelet != nil {
		err = n.kubelet.Stop(DefaultStopGrace)
	}
	if n.sup != nil {
		n.sup.Stop()
	}
	if n.holder != nil && n.holder.Process != nil {
		// Whatever still runs in the node (shims, pods) goes with it.
		killNamespace(n.Namespace("mnt"))
		_ = n.holder.Process.Kill()
		_ = n.holder.Wait()
		n.holder.Process = nil
	}
	return err
}

// killNamespace kills every process in the mount namespace mnt (a /proc/<pid>/ns/mnt
// path) and all their descendants, so that no shim of a node, nor any container its
// shims started (each in a mount namespace of its own), outlives the node.
func killNamespace(mnt string) {
	want, err := os.Readlink(mnt)
	if err != nil {
		return
	}
	parents := map[int]int{}
	var doomed []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if got, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid)); err == nil && got == want {
			doomed = append(doomed, pid)
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
			if i := bytes.LastIndexByte(stat, ')'); i > 0 {
				if f := strings.Fields(string(stat[i+1:])); len(f) > 1 {
					parents[pid], _ = strconv.Atoi(f[1])
				}
			}
		}
	}
	inNode := map[int]bool{}
	for _, pid := range doomed {
		inNode[pid] = true
	}
	for pid := range parents {
		for p, depth := parents[pid], 0; p > 1 && depth < 64; p, depth = parents[p], depth+1 {
			if inNode[p] {
				doomed = append(doomed, pid)
				break
			}
		}
	}
	for _, pid := range doomed {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
