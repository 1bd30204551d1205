package artifacts

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/isolator-dev/isolator/bootstrap/hostexec"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

func TestStageActivateVerify(t *testing.T) {
	cases := []struct {
		name      string
		source    func(t *testing.T, r fakekata.Release) string
		wantIDPfx string
	}{
		{
			name: "tarball",
			source: func(t *testing.T, r fakekata.Release) string {
				p, err := r.WriteTarball(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantIDPfx: "3.2.0-",
		},
		{
			name: "tarball of Kata before 3.21 (xz)",
			source: func(t *testing.T, r fakekata.Release) string {
				p, err := r.WriteTarballAs(t.TempDir(), "xz")
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantIDPfx: "3.2.0-",
		},
		{
			name: "tarball (gz)",
			source: func(t *testing.T, r fakekata.Release) string {
				p, err := r.WriteTarballAs(t.TempDir(), "gz")
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantIDPfx: "3.2.0-",
		},
		{
			name: "directory",
			source: func(t *testing.T, r fakekata.Release) string {
				p, err := r.WriteDir(t.TempDir())
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
			wantIDPfx: "local-",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			host := t.TempDir()
			in := Installer{HostRoot: host, Exec: hostexec.Runner{Root: host, Direct: true}}
			rel := fakekata.Release{Version: "3.2.0"}
			src := c.source(t, rel)

			res, err := in.Stage(src)
			if err != nil {
				t.Fatalf("Stage: %v", err)
			}
			if !strings.HasPrefix(res.ID, c.wantIDPfx) || res.Dir != VersionsDir+"/"+res.ID || !res.Activate || len(res.Digest) != 64 {
				t.Fatalf("Stage result = %+v", res)
			}
			if err := in.Activate(res.Dir); err != nil {
				t.Fatal(err)
			}
			shim, err := os.ReadFile(filepath.Join(host, KataDir, "bin", "containerd-shim-kata-v2"))
			if err != nil || !strings.Contains(string(shim), "3.2.0") {
				t.Fatalf("shim through /opt/kata: %q %v", shim, err)
			}
			link, err := os.Readlink(filepath.Join(host, VersionsDir, res.ID, "share", "kata-containers", "vmlinux.container"))
			if err != nil || link != "vmlinux-6.1.62-fake" {
				t.Errorf("symlink in release = %q %v", link, err)
			}
			if problems, err := in.Verify(res.Digest); err != nil || len(problems) != 0 {
				t.Fatalf("Verify after install: %v %v", problems, err)
			}
			for _, name := range []string{"bin", "libexec", "share"} {
				if got, err := os.Readlink(filepath.Join(host, KataDir, name)); err != nil || got != "current/"+name {
					t.Errorf("/opt/kata/%s -> %q, %v; want current/%s", name, got, err, name)
				}
			}
			if err := os.Remove(filepath.Join(host, KataDir, "libexec")); err != nil {
				t.Fatal(err)
			}
			if problems, _ := in.Verify(res.Digest); strings.Join(problems, ";") != "/opt/kata/libexec does not link to current/libexec" {
				t.Errorf("Verify with a missing link = %q", problems)
			}
			if err := in.Activate(res.Dir); err != nil {
				t.Fatal(err)
			}

			// Same content again: nothing staged, nothing to activate.
			again, err := in.Stage(src)
			if err != nil || again.Activate || again.Dir != res.Dir {
				t.Fatalf("second Stage = %+v, %v; want the active dir reused", again, err)
			}

			// Damage a file: Verify says what, Stage repairs into a fresh directory.
			shimPath := filepath.Join(host, res.Dir, "bin", "containerd-shim-kata-v2")
			if err := os.WriteFile(shimPath, []byte("tampered"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(host, res.Dir, "libexec", "virtiofsd")); err != nil {
				t.Fatal(err)
			}
			problems, err := in.Verify(res.Digest)
			if err != nil || strings.Join(problems, ";") != "changed bin/containerd-shim-kata-v2;missing libexec/virtiofsd" {
				t.Fatalf("Verify after damage = %q, %v", problems, err)
			}
			repaired, err := in.Stage(src)
			if err != nil || !repaired.Activate || repaired.Dir == res.Dir || repaired.ID != res.ID {
				t.Fatalf("repair Stage = %+v, %v", repaired, err)
			}
			if err := in.Activate(repaired.Dir); err != nil {
				t.Fatal(err)
			}
			if problems, _ := in.Verify(repaired.Digest); len(problems) != 0 {
				t.Fatalf("Verify after repair: %v", problems)
			}
			if err := in.Prune(repaired.Dir); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(filepath.Join(host, VersionsDir))
			if len(entries) != 1 || entries[0].Name() != filepath.Base(repaired.Dir) {
				t.Errorf("after Prune: %v", entries)
			}

			ran, err := in.Check(context.Background())
			if !ran || err != nil {
				t.Errorf("Check = %v, %v; want it to run kata-runtime check and pass", ran, err)
			}

			if err := in.Remove(); err != nil {
				t.Fatal(err)
			}
			if err := in.Remove(); err != nil {
				t.Fatalf("second Remove: %v", err)
			}
			for _, p := range []string{KataDir, VersionsDir, CurrentLink} {
				if _, err := os.Lstat(filepath.Join(host, p)); !os.IsNotExist(err) {
					t.Errorf("%s still exists after Remove", p)
				}
			}
		})
	}
}

func TestUpgradeKeepsPrevious(t *testing.T) {
	host := t.TempDir()
	in := Installer{HostRoot: host}
	var dirs []string
	for _, v := range []string{"3.1.0", "3.2.0"} {
		src, err := fakekata.Release{Version: v}.WriteTarball(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		res, err := in.Stage(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Activate(res.Dir); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, res.Dir)
	}
	cur, _ := in.Current()
	if cur != dirs[1] {
		t.Fatalf("current = %s, want %s", cur, dirs[1])
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(host, d, "bin", "kata-runtime")); err != nil {
			t.Errorf("version %s removed before pruning: %v", d, err)
		}
	}
}

func TestStageErrors(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, host string) string
		want  string
	}{
		{"badly named file", func(t *testing.T, _ string) string {
			p := filepath.Join(t.TempDir(), "kata.tar")
			_ = os.WriteFile(p, []byte("x"), 0o644)
			return p
		}, "kata-go-static-<version>-<arch>.tar.zst (Kata 4 and later)"},
		{"directory without opt/kata", func(t *testing.T, _ string) string { return t.TempDir() }, "./opt/kata/bin"},
		{"foreign /opt/kata", func(t *testing.T, host string) string { // a manual Kata install
			_ = os.MkdirAll(filepath.Join(host, "opt", "kata", "bin"), 0o755)
			p, _ := fakekata.Release{Version: "1"}.WriteTarball(t.TempDir())
			return p
		}, "holds files isolator did not install (bin)"},
		{"corrupt xz", func(t *testing.T, _ string) string {
			p := filepath.Join(t.TempDir(), "kata-static-3.2.0-amd64.tar.xz")
			_ = os.WriteFile(p, []byte("not xz"), 0o644)
			return p
		}, "xz"},
		{"corrupt zst", func(t *testing.T, _ string) string {
			p := filepath.Join(t.TempDir(), "kata-static-3.21.0-amd64.tar.zst")
			_ = os.WriteFile(p, []byte("not zstd at all"), 0o644)
			return p
		}, "zstd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			host := t.TempDir()
			src := c.setup(t, host)
			_, err := Installer{HostRoot: host}.Stage(src)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestCheckFails(t *testing.T) {
	host := t.TempDir()
	in := Installer{HostRoot: host, Exec: hostexec.Runner{Root: host, Direct: true}}
	src, err := fakekata.Release{Version: "3.2.0", CheckFails: true}.WriteTarball(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	res, err := in.Stage(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Activate(res.Dir); err != nil {
		t.Fatal(err)
	}
	ran, err := in.Check(context.Background())
	if !ran || err == nil || !strings.Contains(err.Error(), "/dev/kvm not found") {
		t.Fatalf("Check = %v, %v; want kata-runtime's failure", ran, err)
	}
}
