//go:build e2e

// Package node_test runs the real isolator binary's node bootstrapper against real
// containerd processes: Debian's containerd 1.6 and containerd 2.4 built from the
// github.com/containerd/containerd/v2 module (make tools).
//
// Each test builds a small "host": temporary directories that every process of the test
// sees at /etc/containerd, /opt and /run, through bind mounts in a private mount
// namespace (unshare), exactly as a node's containerd and the DaemonSet's isolator see
// the node. The machine's own are never touched (TestMain checks). containerd runs as
// root with a temporary --root, --state and --address. Pod hosts (harness.Node) are
// whole nodes: one mount namespace for all their processes (with /var/lib and /var/log
// bound too), a network namespace of their own, a pod network, and for some a kubelet,
// kube-scheduler and kube-proxy (kubelet_test.go, install_test.go). Kata itself cannot
// run here (no KVM), so the artifacts are a fake kata-static release
// (internal/testfixtures/fakekata) and --kvm-device points at a file the test creates.
package node_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/isolator-dev/isolator/bootstrap/cri"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

var (
	isolatorBin string // built with -tags crashhook
	releaseBin  string // as make build builds it
	toolsBin    string
)

// skipRootEnv is the documented opt-out (README) for machines where the suite can't
// run: without root it fails, saying why, unless this is set; then each test skips.
const skipRootEnv = "ISOLATOR_E2E_SKIP_ROOT"

// skipReason is why every test skips, under the opt-out.
var skipReason string

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		if os.Getenv(skipRootEnv) == "" {
			fmt.Printf("e2e/node: FAIL: the suite needs root (mount namespaces, containerd); run it as root, or set %s=1 to skip it\n", skipRootEnv)
			os.Exit(1)
		}
		skipReason = "needs root (mount namespaces, containerd); skipped because " + skipRootEnv + " is set"
		os.Exit(m.Run())
	}
	toolsBin = harness.ToolsBin()
	dir, err := os.MkdirTemp("", "isolator-bin-")
	if err != nil {
		panic(err)
	}
	// The crash tests kill the process at each step; that hook is only in a binary
	// built with -tags crashhook, never in the release (TestReleaseBinaryHasNoCrashHook).
	isolatorBin = filepath.Join(dir, "isolator")
	if out, err := exec.Command("go", "build", "-tags", "crashhook", "-o", isolatorBin, "github.com/isolator-dev/isolator/cmd/isolator").CombinedOutput(); err != nil {
		fmt.Printf("e2e/node: FAIL: build isolator -tags crashhook: %v\n%s", err, out)
		os.Exit(1)
	}
	releaseBin = os.Getenv("ISOLATOR_BIN")
	if _, err := os.Stat(releaseBin); releaseBin == "" || err != nil {
		releaseBin = filepath.Join(dir, "isolator-release")
		if out, err := exec.Command("go", "build", "-o", releaseBin, "github.com/isolator-dev/isolator/cmd/isolator").CombinedOutput(); err != nil {
			fmt.Printf("e2e/node: FAIL: build isolator: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	before := machineState()
	code := m.Run()
	_ = os.RemoveAll(dir)
	if after := machineState(); after != before {
		fmt.Printf("e2e/node: FAIL: the suite changed the machine's own node state:\nbefore: %s\nafter:  %s\n", before, after)
		code = 1
	}
	os.Exit(code)
}

// machinePaths are the machine's own node state, which no test may create or change:
// every host binds test directories over them.
var machinePaths = []string{"/etc/containerd", "/opt/kata", "/opt/cni", "/run/containerd", "/run/nri", "/run/netns",
	"/var/lib/cni", "/var/lib/isolator", "/var/lib/kubelet", "/var/log/pods", "/var/log/containers"}

// machineState describes machinePaths: which exist, with their modification times.
func machineState() string {
	var b strings.Builder
	for _, p := range machinePaths {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s@%d ", p, st.ModTime().UnixNano())
		}
	}
	return b.String()
}

// requireRoot skips the test under the documented opt-out; TestMain has failed the
// suite already when the opt-out is not set.
func requireRoot(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// TestReleaseBinaryHasNoCrashHook: the release binary (make build) carries no fault
// injection; the suite's own -tags crashhook binary does, which shows the check works.
func TestReleaseBinaryHasNoCrashHook(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		bin  string
		want bool
	}{{releaseBin, false}, {isolatorBin, true}} {
		data, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(data, []byte("ISOLATOR_NODE_CRASH_AT")); got != c.want {
			t.Errorf("%s has the crash hook: %v, want %v", c.bin, got, c.want)
		}
	}
}

// runtimeSpec is one containerd under test.
type runtimeSpec struct {
	name   string
	binary string
}

func runtimes(t *testing.T) []runtimeSpec {
	t.Helper()
	requireRoot(t)
	c2 := filepath.Join(toolsBin, "containerd2")
	if _, err := os.Stat(c2); err != nil {
		t.Fatalf("containerd 2.x not built (%v): run make tools", err)
	}
	return []runtimeSpec{
		{name: "containerd-1.6", binary: "/usr/bin/containerd"},
		{name: "containerd-2.4", binary: c2},
	}
}

// host is one test node.
type host struct {
	t          *testing.T
	dir        string
	etc, opt   string // seen as /etc/containerd and /opt
	sock       string
	containerd string
	kvm        string
	tarball    string
	sup        *harness.Supervisor // containerd's, on a host that is not a pod host
	// runDir, when set, is bound over /run for isolator (not containerd): the systemd
	// test puts its D-Bus socket there.
	runDir string
	// node, when set, is a pod host's node (harness.Node, see newPodHost): a mount
	// namespace with the test directories bound in, which every process of the host
	// enters, and a network namespace, which containerd and its pods enter. isolator
	// and the kubelet stay in the test's network namespace, where the apiserver listens.
	node *harness.Node
	runs int // containers runOnce started
}

func newHost(t *testing.T, rt runtimeSpec) *host {
	t.Helper()
	requireRoot(t)
	dir, err := os.MkdirTemp("", "isolator-node-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(filepath.Join(dir, "containerd.log")); err == nil {
				t.Logf("containerd log (last 30 lines):\n%s", tail(string(log), 30))
			}
		}
		_ = os.RemoveAll(dir)
	})
	h := &host{
		t: t, dir: dir,
		etc: filepath.Join(dir, "etc-containerd"), opt: filepath.Join(dir, "opt"),
		sock: filepath.Join(dir, "containerd.sock"), containerd: rt.binary,
		kvm: filepath.Join(dir, "kvm"),
	}
	for _, d := range []string{h.etc, h.opt, h.run(), filepath.Join(dir, "var-lib"), filepath.Join(dir, "var-log"), filepath.Join(dir, "root"), filepath.Join(dir, "state")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Stands for /dev/kvm: Kata cannot run here, the fake release's kata-runtime check passes.
	if err := os.WriteFile(h.kvm, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if h.tarball, err = (fakekata.Release{Version: "3.2.0"}).WriteTarball(dir); err != nil {
		t.Fatal(err)
	}
	return h
}

// command runs name with args in the host's mount namespace.
func (h *host) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return h.commandWithRun(ctx, "", name, args...)
}

// commandWithRun is command with runDir bound over /run (default: the host's own, see
// run). A pod host's processes enter its node mount namespace instead.
func (h *host) commandWithRun(ctx context.Context, runDir, name string, args ...string) *exec.Cmd {
	if h.node != nil {
		return h.node.Command(ctx, name, args...)
	}
	if runDir == "" {
		// containerd keeps its NRI socket under /run/nri: the machine's /run stays as it is.
		runDir = h.run()
	}
	script := fmt.Sprintf("mount --bind %s /run && mount --bind %s /etc/containerd && mount --bind %s /opt && exec \"$@\"", runDir, h.etc, h.opt)
	full := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", name}, args...)
	return exec.CommandContext(ctx, "unshare", full...)
}

// writeDefaultConfig writes `containerd config default` of the host's containerd.
func (h *host) writeDefaultConfig() []byte {
	h.t.Helper()
	out, err := exec.Command(h.containerd, "config", "default").Output()
	if err != nil {
		h.t.Fatalf("containerd config default: %v", err)
	}
	h.writeConfig(out)
	return out
}

func (h *host) writeConfig(data []byte) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.etc, "config.toml"), data, 0o644); err != nil {
		h.t.Fatal(err)
	}
}

func (h *host) config() []byte {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.etc, "config.toml"))
	if err != nil {
		h.t.Fatal(err)
	}
	return data
}

// tree lists every path under dir with its size, for "nothing else changed" checks.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, _ := d.Info()
		out = append(out, fmt.Sprintf("%s %v %d", rel, info.Mode(), info.Size()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// startContainerd starts containerd under a supervisor (the stand-in for systemd's
// containerd.service) and waits for CRI. While failWhen returns true, containerd fails
// to start.
func (h *host) startContainerd(failWhen func() bool) {
	h.t.Helper()
	sup, err := harness.Supervise(filepath.Join(h.dir, "containerd.log"), func() *exec.Cmd {
		args := []string{"--config", "/etc/containerd/config.toml", "--root", filepath.Join(h.dir, "root"),
			"--state", filepath.Join(h.dir, "state"), "--address", h.sock}
		if failWhen != nil && failWhen() {
			// Stands for a containerd that cannot start with the new config: the
			// unknown flag makes this very binary exit at once.
			args = append(args, "--isolator-e2e-fail-to-start")
		}
		return h.command(context.Background(), h.containerd, args...)
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.sup = sup
	h.t.Cleanup(sup.Stop)
	if _, err := cri.WaitFor(context.Background(), h.endpoint(), "kata", false, 30*time.Second); err != nil {
		h.t.Fatalf("containerd did not serve CRI: %v", err)
	}
}

// starts is how many times the host's containerd was started.
func (h *host) starts() int {
	if h.node != nil {
		return h.node.ContainerdStarts()
	}
	return h.sup.Starts()
}

// run is what the host's processes see as /run, unless a test binds another.
func (h *host) run() string { return filepath.Join(h.dir, "run") }

func (h *host) endpoint() string { return "unix://" + h.sock }

// result is one run of the isolator binary.
type result struct {
	out, err string
	exit     int
	signaled syscall.Signal
	took     time.Duration
}

var downtimeRe = regexp.MustCompile(`downtime (\d+)ms`)

// downtime is the containerd downtime isolator reported.
func (r result) downtime() time.Duration {
	m := downtimeRe.FindStringSubmatch(r.out)
	if m == nil {
		return -1
	}
	ms, _ := strconv.Atoi(m[1])
	return time.Duration(ms) * time.Millisecond
}

// isolator runs `isolator node <args>` in the host's namespace with signal restarts.
func (h *host) isolator(env []string, args ...string) result {
	h.t.Helper()
	// The test's own flags come after these defaults, so a test can override them.
	full := append([]string{"node", args[0]}, h.defaultFlags()...)
	full = append(full, args[1:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := h.commandWithRun(ctx, h.runDir, isolatorBin, full...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{out: stdout.String(), err: stderr.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			r.signaled = ws.Signal()
		}
	case err != nil:
		h.t.Fatalf("run isolator: %v", err)
	}
	return r
}

// defaultFlags are the node flags every run on this host gets. The hosts of most
// tests have no pod network and no pause image, so no pod sandbox can start there
// whatever the shim: they skip the sandbox check, and pod hosts (newPodHost, in
// sandbox_test.go) turn it back on.
func (h *host) defaultFlags() []string {
	return []string{"--restart", "signal", "--cri-endpoint", h.endpoint(), "--state-dir", "/opt/isolator-state",
		"--kvm-device", h.kvm, "--containerd-binary", h.containerd, "--verify-timeout", "20s",
		"--skip-sandbox-check=" + strconv.FormatBool(h.node == nil)}
}

// mustIsolator runs isolator and fails the test unless it exits 0.
func (h *host) mustIsolator(args ...string) result {
	h.t.Helper()
	r := h.isolator(nil, args...)
	if r.exit != 0 {
		h.t.Fatalf("isolator %v: exit %d\nstdout: %s\nstderr: %s", args, r.exit, r.out, tail(r.err, 20))
	}
	return r
}

// served asks containerd over CRI whether it serves the kata handler.
func (h *host) served() (bool, *cri.Status) {
	h.t.Helper()
	st, err := cri.Query(context.Background(), h.endpoint())
	if err != nil {
		h.t.Fatalf("CRI status: %v", err)
	}
	return st.RuntimeReady && st.Handlers["kata"], st
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
