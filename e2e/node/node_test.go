//go:build e2e

package node_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/isolator-dev/isolator/bootstrap"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

// TestInstallUninstall is the whole life of a node on each containerd: install, one
// restart, CRI serves kata; a second install restarts nothing; uninstall restarts once
// and leaves the config byte-identical with the handler gone.
func TestInstallUninstall(t *testing.T) {
	for _, rt := range runtimes(t) {
		t.Run(rt.name, func(t *testing.T) {
			h := newHost(t, rt)
			original := h.writeDefaultConfig()
			etcBefore := tree(t, h.etc)
			optBefore := tree(t, h.opt)
			h.startContainerd(nil)
			if ok, _ := h.served(); ok {
				t.Fatal("kata served before install")
			}

			r := h.mustIsolator("install", "--artifacts", h.tarball)
			if got := h.starts(); got != 2 {
				t.Errorf("containerd started %d times after install, want 2 (one restart)", got)
			}
			if ok, st := h.served(); !ok {
				t.Fatalf("CRI does not list the kata handler after install: %+v", st)
			}
			t.Logf("%s: install took %s; containerd downtime %s", rt.name, r.took, r.downtime())
			if _, err := os.Stat(filepath.Join(h.opt, "kata", "bin", "containerd-shim-kata-v2")); err != nil {
				t.Errorf("shim not installed under /opt/kata: %v", err)
			}

			again := h.mustIsolator("install", "--artifacts", h.tarball)
			if got := h.starts(); got != 2 {
				t.Errorf("second install restarted containerd (%d starts)", got)
			}
			if !strings.Contains(again.out, "changed false, containerd restarted false") {
				t.Errorf("second install output = %q, want no change and no restart", again.out)
			}
			status := h.mustIsolator("status")
			if !strings.Contains(status.out, "serving kata: true") || strings.Contains(status.out, "drift:") {
				t.Errorf("status after install:\n%s", status.out)
			}

			u := h.mustIsolator("uninstall")
			t.Logf("%s: uninstall took %s; containerd downtime %s", rt.name, u.took, u.downtime())
			if got := h.starts(); got != 3 {
				t.Errorf("containerd started %d times after uninstall, want 3", got)
			}
			if ok, _ := h.served(); ok {
				t.Error("kata still served after uninstall")
			}
			if got := h.config(); !bytes.Equal(got, original) {
				t.Errorf("config after uninstall differs from the original:\n%s", got)
			}
			if got := tree(t, h.etc); !slices.Equal(got, etcBefore) {
				t.Errorf("/etc/containerd after uninstall = %v, want %v", got, etcBefore)
			}
			for _, p := range []string{"kata", "isolator-state"} {
				if _, err := os.Lstat(filepath.Join(h.opt, p)); !os.IsNotExist(err) {
					t.Errorf("/opt/%s still exists after uninstall", p)
				}
			}
			if got := tree(t, h.opt); !slices.Equal(withoutContainerdOpt(got), withoutContainerdOpt(optBefore)) {
				t.Errorf("/opt after uninstall = %v, want %v", got, optBefore)
			}
			// Uninstall is idempotent: a second one changes and restarts nothing.
			u2 := h.mustIsolator("uninstall")
			if !strings.Contains(u2.out, "changed false, containerd restarted false") || h.starts() != 3 {
				t.Errorf("second uninstall: %q, %d starts", u2.out, h.starts())
			}
		})
	}
}

// TestAdminConfigSurvives installs onto a hand-written containerd 1.6 config with
// comments, floats and its own CRI settings: containerd 1.x replaces whole plugin
// sections on import, so the drop-in must carry them. The effective CRI config keeps
// the admin's settings, and uninstall restores the file byte for byte.
func TestAdminConfigSurvives(t *testing.T) {
	h := newHost(t, runtimes(t)[0])
	original, err := os.ReadFile(filepath.Join("..", "..", "bootstrap", "containerd", "testdata", "configs", "v2-comments-floats.toml"))
	if err != nil {
		t.Fatal(err)
	}
	// The fixture's SystemdCgroup needs systemd for containers only, not to serve CRI.
	h.writeConfig(original)
	h.startContainerd(nil)
	h.mustIsolator("install", "--artifacts", h.tarball)
	ok, st := h.served()
	if !ok {
		t.Fatalf("kata not served: %+v", st)
	}
	for _, want := range []string{`"sandboxImage":"registry.example.com/pause:3.9"`, `"maxContainerLogSize":16384`, `"SystemdCgroup":true`} {
		if !strings.Contains(st.Config, want) {
			t.Errorf("effective CRI config lost the admin's %s", want)
		}
	}
	h.mustIsolator("uninstall")
	if got := h.config(); !bytes.Equal(got, original) {
		t.Errorf("config after uninstall differs:\n%s", got)
	}
}

// TestCrashAtEachStep kills the installer with SIGKILL at every step boundary of
// install (and of uninstall), then reruns it: the node converges, a further install
// restarts nothing, and uninstall restores the config byte for byte.
func TestCrashAtEachStep(t *testing.T) {
	rt := runtimes(t)[0]
	for _, step := range bootstrap.StepNames {
		t.Run("install/"+step, func(t *testing.T) {
			h := newHost(t, rt)
			original := h.writeDefaultConfig()
			h.startContainerd(nil)
			r := h.isolator([]string{"ISOLATOR_NODE_CRASH_AT=" + step}, "install", "--artifacts", h.tarball)
			if r.signaled != syscall.SIGKILL {
				t.Fatalf("install with a crash at %s: exit %d, signal %v, want SIGKILL\n%s", step, r.exit, r.signaled, tail(r.err, 10))
			}
			h.mustIsolator("install", "--artifacts", h.tarball)
			if ok, st := h.served(); !ok {
				t.Fatalf("after rerun, kata not served: %+v", st)
			}
			starts := h.starts()
			again := h.mustIsolator("install", "--artifacts", h.tarball)
			if h.starts() != starts || !strings.Contains(again.out, "containerd restarted false") {
				t.Errorf("install after convergence restarted containerd: %s", again.out)
			}
			status := h.mustIsolator("status")
			if strings.Contains(status.out, "drift:") {
				t.Errorf("drift after convergence:\n%s", status.out)
			}
			h.mustIsolator("uninstall")
			if got := h.config(); !bytes.Equal(got, original) {
				t.Errorf("config after uninstall differs from the original")
			}
		})
	}
	for _, step := range []string{bootstrap.StepUnlabelled, bootstrap.StepConfigRemoved, bootstrap.StepRestarted, bootstrap.StepArtifactsRemoved} {
		t.Run("uninstall/"+step, func(t *testing.T) {
			h := newHost(t, rt)
			original := h.writeDefaultConfig()
			h.startContainerd(nil)
			h.mustIsolator("install", "--artifacts", h.tarball)
			r := h.isolator([]string{"ISOLATOR_NODE_CRASH_AT=" + step}, "uninstall")
			if r.signaled != syscall.SIGKILL {
				t.Fatalf("uninstall with a crash at %s: exit %d, signal %v\n%s", step, r.exit, r.signaled, tail(r.err, 10))
			}
			h.mustIsolator("uninstall")
			if ok, _ := h.served(); ok {
				t.Error("kata still served after the rerun uninstall")
			}
			if got := h.config(); !bytes.Equal(got, original) {
				t.Errorf("config after uninstall differs from the original")
			}
			if _, err := os.Lstat(filepath.Join(h.opt, "kata")); !os.IsNotExist(err) {
				t.Error("/opt/kata remains")
			}
		})
	}
}

// TestRollbackWhenContainerdFailsToStart: containerd cannot start with the new config,
// so isolator restores the previous config, restarts containerd onto it and fails.
func TestRollbackWhenContainerdFailsToStart(t *testing.T) {
	h := newHost(t, runtimes(t)[0])
	original := h.writeDefaultConfig()
	dropIn := filepath.Join(h.etc, "conf.d", "isolator-kata.toml")
	h.startContainerd(func() bool {
		_, err := os.Stat(dropIn)
		return err == nil
	})
	r := h.isolator(nil, "install", "--artifacts", h.tarball, "--verify-timeout", "5s")
	if r.exit != 1 || !strings.Contains(r.err, "restored the previous containerd config") {
		t.Fatalf("install: exit %d\n%s", r.exit, tail(r.err, 10))
	}
	if got := h.config(); !bytes.Equal(got, original) {
		t.Errorf("config after rollback differs from the original:\n%s", got)
	}
	if _, err := os.Stat(dropIn); !os.IsNotExist(err) {
		t.Errorf("drop-in remains after rollback: %v", err)
	}
	ok, st := h.served()
	if ok || !st.RuntimeReady {
		t.Errorf("after rollback containerd ready %v, kata served %v; want ready without kata", st.RuntimeReady, ok)
	}
	status := h.isolator(nil, "status")
	if status.exit != 1 || !strings.Contains(status.out, "installed:    false") {
		t.Errorf("status after rollback: exit %d\n%s", status.exit, status.out)
	}
}

// TestWriteFailureLeavesConfigIntact fills the filesystem holding /etc/containerd (a
// small tmpfs) so that a write fails part-way: the admin's config stays intact, no
// temporary file is left and containerd is not restarted.
func TestWriteFailureLeavesConfigIntact(t *testing.T) {
	cases := []struct {
		name      string
		freePages int // pages left free: 0 fails the drop-in, 1 fits the drop-in but not the config
	}{
		{name: "no space for the drop-in", freePages: 0},
		{name: "no space for the config after the drop-in", freePages: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t, runtimes(t)[0])
			if err := syscall.Mount("tmpfs", h.etc, "tmpfs", 0, "size=128k"); err != nil {
				t.Fatalf("mount tmpfs: %v", err)
			}
			t.Cleanup(func() { _ = syscall.Unmount(h.etc, syscall.MNT_DETACH) })
			original := h.writeDefaultConfig()
			h.startContainerd(nil)
			fill(t, filepath.Join(h.etc, ".filler"), c.freePages)
			before := tree(t, h.etc)

			r := h.isolator(nil, "install", "--artifacts", h.tarball)
			if r.exit != 1 || !strings.Contains(r.err, "no space left on device") {
				t.Fatalf("install: exit %d, want a failure that says ENOSPC\n%s", r.exit, tail(r.err, 10))
			}
			if got := h.config(); !bytes.Equal(got, original) {
				t.Errorf("config changed by a failed write")
			}
			after := tree(t, h.etc)
			if !slices.Equal(after, before) && !slices.Equal(withoutConfD(after), before) {
				t.Errorf("files after the failed install = %v, want %v", after, before)
			}
			if h.starts() != 1 {
				t.Errorf("containerd was restarted (%d starts) although nothing was written", h.starts())
			}
		})
	}
}

// withoutConfD drops an empty conf.d directory, which a full tmpfs may still allow.
func withoutConfD(entries []string) []string {
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e, "conf.d ") {
			out = append(out, e)
		}
	}
	return out
}

// fill writes a file until the filesystem is full, then frees freePages pages.
func fill(t *testing.T, p string, freePages int) {
	t.Helper()
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	page := make([]byte, 4096)
	size := int64(0)
	for {
		n, err := f.Write(page)
		size += int64(n)
		if err != nil {
			break
		}
	}
	if err := f.Truncate(size - size%4096 - int64(freePages)*4096); err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeSwapsWithoutRestart installs three Kata releases in a row. The containerd
// config names /opt/kata/bin/..., which leads through /opt/kata/current, and only that
// link changes its target, so no upgrade restarts
// containerd; the previous version stays for running VMs and older ones are pruned.
func TestUpgradeSwapsWithoutRestart(t *testing.T) {
	h := newHost(t, runtimes(t)[0])
	h.writeDefaultConfig()
	h.startContainerd(nil)
	var dirs []string
	for i, v := range []string{"3.1.0", "3.2.0", "3.3.0"} {
		tarball, err := fakekata.Release{Version: v}.WriteTarball(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		h.mustIsolator("install", "--artifacts", tarball)
		target, err := os.Readlink(filepath.Join(h.opt, "kata", "current"))
		if err != nil || !strings.Contains(target, v) {
			t.Fatalf("/opt/kata/current -> %q, %v; want version %s", target, err, v)
		}
		dirs = append(dirs, filepath.Base(target))
		if want := 2; h.starts() != want {
			t.Errorf("after installing %s containerd started %d times, want %d (only the first install restarts)", v, h.starts(), want)
		}
		entries, _ := os.ReadDir(filepath.Join(h.opt, "kata", ".versions"))
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		want := dirs[max(0, i-1):]
		if !slices.Equal(names, want) {
			t.Errorf("after installing %s versions on disk = %v, want %v (active and previous)", v, names, want)
		}
	}
	if ok, _ := h.served(); !ok {
		t.Error("kata not served after the upgrades")
	}
}

// withoutContainerdOpt drops /opt/containerd, which containerd's own opt plugin creates.
func withoutContainerdOpt(entries []string) []string {
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e, "containerd") {
			out = append(out, e)
		}
	}
	return out
}

// TestUninstallWithoutState: the state directory is lost after an install. Uninstall
// still removes isolator's drop-in and its imports entry, so containerd is not left
// importing a file that no longer exists.
func TestUninstallWithoutState(t *testing.T) {
	h := newHost(t, runtimes(t)[0])
	original := h.writeDefaultConfig()
	h.startContainerd(nil)
	h.mustIsolator("install", "--artifacts", h.tarball)
	if err := os.RemoveAll(filepath.Join(h.opt, "isolator-state")); err != nil {
		t.Fatal(err)
	}
	h.mustIsolator("uninstall")
	if got := h.config(); !bytes.Equal(got, original) {
		t.Errorf("config after a stateless uninstall differs:\n%s", got)
	}
	if ok, _ := h.served(); ok {
		t.Error("kata still served")
	}
}

// TestValidationRejectsBeforeWriting: the admin's config parses as TOML but containerd
// cannot load it (a string where containerd wants a number). The host's containerd
// rejects the candidate in `config dump`, so nothing is written and nothing restarts.
func TestValidationRejectsBeforeWriting(t *testing.T) {
	h := newHost(t, runtimes(t)[0])
	h.writeDefaultConfig()
	h.startContainerd(nil)
	// containerd already runs with the good config; the admin then breaks the file.
	broken := append([]byte("version = 2\noom_score = \"high\"\n"), []byte("[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"x\"\n")...)
	h.writeConfig(broken)
	r := h.isolator(nil, "install", "--artifacts", h.tarball)
	if r.exit != 1 || !strings.Contains(r.err, "containerd rejects the candidate config") {
		t.Fatalf("install: exit %d\n%s", r.exit, tail(r.err, 5))
	}
	if got := h.config(); !bytes.Equal(got, broken) {
		t.Errorf("config changed although validation failed")
	}
	if _, err := os.Stat(filepath.Join(h.etc, "conf.d")); !os.IsNotExist(err) {
		t.Errorf("drop-in directory written although validation failed: %v", err)
	}
	if h.starts() != 1 {
		t.Errorf("containerd restarted (%d starts) although validation failed", h.starts())
	}
}
