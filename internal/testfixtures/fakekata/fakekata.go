// Package fakekata builds a stand-in for the Kata Containers static release, laid out
// exactly like kata-static-<version>-<arch>.tar.zst (./opt/kata/{bin,libexec,share}).
// Kata itself cannot run on machines without KVM, so the binaries are small scripts:
// this package is the thin seam that stands for the Kata VM in isolator's tests.
package fakekata

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Release describes a fake release.
type Release struct {
	Version string
	// CheckFails makes kata-runtime check fail, like a host Kata cannot run on.
	CheckFails bool
	// NoKataRuntime leaves bin/kata-runtime out, like an incomplete release.
	NoKataRuntime bool
	// Shim is the containerd-shim-kata-v2 binary. Empty, the shim fails every start,
	// saying so on stderr, like a node where no VM can start; the e2e suites pass the
	// stand-in (e2e/tools/containerd/kata-standin), which starts sandboxes with runc.
	Shim []byte
}

// ShimFailure is what the failing shim prints before it exits 1.
const ShimFailure = "fake Kata shim: no VM can start on this host"

// Files returns the release's regular files by path under opt/kata.
func (r Release) Files() map[string]string {
	check := "echo 'System is capable of running Kata Containers'; exit 0"
	if r.CheckFails {
		check = "echo 'ERROR: kvm: /dev/kvm not found (fake Kata release)' >&2; exit 1"
	}
	files := map[string]string{
		"bin/kata-runtime": "#!/bin/sh\n# fake kata-runtime " + r.Version + "\ncase \"$1\" in\n" +
			"  check) " + check + " ;;\n  --version) echo 'kata-runtime : " + r.Version + "' ;;\n  *) exit 2 ;;\nesac\n",
		"bin/containerd-shim-kata-v2":                            "#!/bin/sh\n# fake Kata shim " + r.Version + "\necho '" + ShimFailure + "' >&2\nexit 1\n",
		"bin/qemu-system-x86_64":                                 "#!/bin/sh\n# fake qemu " + r.Version + "\nexit 1\n",
		"libexec/virtiofsd":                                      "#!/bin/sh\nexit 1\n",
		"share/defaults/kata-containers/configuration.toml":      "# fake Kata configuration " + r.Version + "\n[hypervisor.qemu]\npath = \"/opt/kata/bin/qemu-system-x86_64\"\n",
		"share/defaults/kata-containers/configuration-qemu.toml": "# fake\n",
		"share/kata-containers/vmlinux-6.1.62-fake":              "fake kernel " + r.Version + "\n",
		"share/kata-containers/kata-containers.img":              "fake guest image " + r.Version + "\n",
	}
	if r.Shim != nil {
		files["bin/containerd-shim-kata-v2"] = string(r.Shim)
	}
	if r.NoKataRuntime {
		delete(files, "bin/kata-runtime")
	}
	return files
}

// Symlinks returns the release's symlinks by path under opt/kata.
func (Release) Symlinks() map[string]string {
	return map[string]string{"share/kata-containers/vmlinux.container": "vmlinux-6.1.62-fake"}
}

// WriteTarball writes kata-static-<version>-amd64.tar.zst into dir, compressed as
// Kata's releases are since 3.21.0, and returns its path.
func (r Release) WriteTarball(dir string) (string, error) { return r.WriteTarballAs(dir, "zst") }

// WriteTarballAs writes kata-static-<version>-amd64.tar.<ext> into dir, ext being zst,
// xz (Kata's releases before 3.21.0) or gz, and returns its path.
func (r Release) WriteTarballAs(dir, ext string) (string, error) {
	p := filepath.Join(dir, fmt.Sprintf("kata-static-%s-amd64.tar.%s", r.Version, ext))
	f, err := os.Create(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var xw io.WriteCloser
	switch ext {
	case "zst":
		xw, err = zstd.NewWriter(f)
	case "xz":
		xw, err = xz.NewWriter(f)
	case "gz":
		xw = gzip.NewWriter(f)
	default:
		err = fmt.Errorf("no compression %q", ext)
	}
	if err != nil {
		return "", err
	}
	tw := tar.NewWriter(xw)
	dirs := map[string]bool{}
	for _, name := range sortedKeys(r.Files()) {
		for d := filepath.Dir(name); d != "."; d = filepath.Dir(d) {
			dirs[d] = true
		}
	}
	for _, d := range append([]string{"."}, sortedKeys(dirs)...) {
		name := "./opt/kata/" + d + "/"
		if d == "." {
			name = "./opt/kata/"
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return "", err
		}
	}
	files := r.Files()
	for _, name := range sortedKeys(files) {
		body := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: "./opt/kata/" + name, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(body))}); err != nil {
			return "", err
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			return "", err
		}
	}
	links := r.Symlinks()
	for _, name := range sortedKeys(links) {
		if err := tw.WriteHeader(&tar.Header{Name: "./opt/kata/" + name, Typeflag: tar.TypeSymlink, Linkname: links[name]}); err != nil {
			return "", err
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := xw.Close(); err != nil {
		return "", err
	}
	return p, f.Close()
}

// WriteDir lays the release out as <dir>/opt/kata and returns dir.
func (r Release) WriteDir(dir string) (string, error) {
	root := filepath.Join(dir, "opt", "kata")
	for name, body := range r.Files() {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			return "", err
		}
	}
	for name, target := range r.Symlinks() {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			return "", err
		}
	}
	return dir, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
