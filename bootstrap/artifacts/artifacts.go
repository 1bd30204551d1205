// Package artifacts installs the Kata Containers static release on a node.
//
// Each release goes into its own directory, /opt/kata/.versions/<version>-<hash>, and
// /opt/kata/current is a symlink to the active one, swapped atomically (a rename). The
// release's top-level entries are reached through fixed symlinks, /opt/kata/bin ->
// current/bin and so on, so the paths containerd and Kata's own configuration name
// (/opt/kata/bin/containerd-shim-kata-v2, /opt/kata/share/...) switch to a new version
// all at once. Files are never rewritten in place, so a running shim never meets "Text
// file busy", and a running VM keeps its binaries until the previous version is pruned
// (after the new one is verified). /opt/kata itself stays a plain directory, so it can be
// a mount point. A sha256 manifest written at install time lets later runs detect and
// repair damaged files.
package artifacts

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/isolator-dev/isolator/bootstrap/hostexec"
	"github.com/isolator-dev/isolator/bootstrap/internal/atomicfile"
)

// Host paths of the installation.
const (
	KataDir     = "/opt/kata"           // containerd's config and Kata's name paths under it
	VersionsDir = "/opt/kata/.versions" // one directory per installed version
	CurrentLink = "/opt/kata/current"   // symlink to the active version
	// ManifestName is the manifest inside each version directory: "sha256  path" lines
	// for files and "symlink target  path" lines for links, sorted by path.
	ManifestName = ".isolator-manifest"
	// checkTimeout bounds kata-runtime check.
	checkTimeout = 2 * time.Minute
)

var tarballName = regexp.MustCompile(`^kata-(?:go-)?static-(.+)-(amd64|arm64|s390x|ppc64le|x86_64|aarch64)\.tar(\.zst|\.xz|\.gz)?$`)

// Installer installs artifacts under a host root.
type Installer struct {
	HostRoot string // "/" on the node itself, "/host" in the DaemonSet
	// Exec runs host binaries (kata-runtime check); its Root is HostRoot.
	Exec hostexec.Runner
}

// Result describes an installed version.
type Result struct {
	ID       string // <release>-<manifest hash>, e.g. 3.2.0-4f2a9c1b7d3e
	Dir      string // the version directory, as the host sees it
	Digest   string // sha256 of the manifest
	Activate bool   // /opt/kata must be switched to Dir
}

func (in Installer) host(p string) string { return filepath.Join(in.HostRoot, p) }

// Stage copies the release at src (a kata-static tarball, or a directory that holds
// ./opt/kata) into a version directory and verifies it. An intact copy of the same
// content is reused, so a rerun stages nothing.
func (in Installer) Stage(src string) (*Result, error) {
	if err := in.checkKataDirIsOurs(); err != nil {
		return nil, err
	}
	versions := in.host(VersionsDir)
	if err := os.MkdirAll(versions, 0o755); err != nil {
		return nil, err
	}
	staging, err := os.MkdirTemp(versions, ".staging-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging) // gone once renamed into place
	release, err := Extract(src, staging)
	if err != nil {
		return nil, fmt.Errorf("artifacts %s: %w", src, err)
	}
	manifest, err := buildManifest(staging)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(manifest)
	digest := hex.EncodeToString(sum[:])
	id := release + "-" + digest[:12]
	if err := os.WriteFile(filepath.Join(staging, ManifestName), manifest, 0o444); err != nil {
		return nil, err
	}
	if err := syncTree(staging); err != nil {
		return nil, err
	}

	current, _ := in.Current()
	// Reuse an intact directory of the same content, preferring the active one.
	candidates, _ := filepath.Glob(filepath.Join(versions, id+"*"))
	if current != "" {
		candidates = append([]string{in.host(current)}, candidates...)
	}
	for _, dir := range candidates {
		if !strings.HasPrefix(filepath.Base(dir), id) {
			continue
		}
		if problems, err := VerifyDir(dir, digest); err == nil && len(problems) == 0 {
			hostDir := path.Join(VersionsDir, filepath.Base(dir))
			return &Result{ID: id, Dir: hostDir, Digest: digest, Activate: hostDir != current}, nil
		}
	}
	name := id
	if _, err := os.Lstat(filepath.Join(versions, name)); err == nil {
		// A damaged copy holds the name: use a fresh one, the damaged copy is pruned later.
		name = id + "." + randomSuffix()
	}
	if err := os.Rename(staging, filepath.Join(versions, name)); err != nil {
		return nil, err
	}
	if err := atomicfile.SyncDir(versions); err != nil {
		return nil, err
	}
	dir := path.Join(VersionsDir, name)
	if problems, err := VerifyDir(in.host(dir), digest); err != nil {
		return nil, fmt.Errorf("verify artifacts in %s: %w", dir, err)
	} else if len(problems) > 0 {
		return nil, fmt.Errorf("artifacts in %s fail verification right after install: %v", dir, problems)
	}
	return &Result{ID: id, Dir: dir, Digest: digest, Activate: dir != current}, nil
}

// checkKataDirIsOurs refuses to take over an /opt/kata that another installation owns:
// everything in it must be isolator's (.versions, current, symlinks into current/).
func (in Installer) checkKataDirIsOurs() error {
	dir := in.host(KataDir)
	st, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s exists and is not a directory: move it away, then rerun", KataDir)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var foreign []string
	for _, e := range entries {
		if e.Name() == path.Base(VersionsDir) || e.Name() == path.Base(CurrentLink) {
			continue
		}
		if target, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(target, path.Base(CurrentLink)+"/") {
			continue
		}
		foreign = append(foreign, e.Name())
	}
	if len(foreign) > 0 {
		return fmt.Errorf("%s holds files isolator did not install (%s): another Kata installation? Remove it, then rerun", KataDir, strings.Join(foreign, ", "))
	}
	return nil
}

// Activate points /opt/kata/current at dir atomically, then makes sure /opt/kata/<entry>
// leads through current/ for every top-level entry of the release.
func (in Installer) Activate(dir string) error {
	rel, err := filepath.Rel(KataDir, dir)
	if err != nil {
		return err
	}
	if err := atomicfile.Symlink(rel, in.host(CurrentLink)); err != nil {
		return err
	}
	return in.linkEntries(dir)
}

// linkEntries creates /opt/kata/<name> -> current/<name> for the release's entries and
// removes such links whose target the release no longer has.
func (in Installer) linkEntries(dir string) error {
	release, err := os.ReadDir(in.host(dir))
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, e := range release {
		if e.Name() != ManifestName {
			want[e.Name()] = true
		}
	}
	existing, err := os.ReadDir(in.host(KataDir))
	if err != nil {
		return err
	}
	for _, e := range existing {
		link := filepath.Join(in.host(KataDir), e.Name())
		target, err := os.Readlink(link)
		if err != nil || !strings.HasPrefix(target, path.Base(CurrentLink)+"/") || want[e.Name()] {
			continue
		}
		if err := atomicfile.Remove(link); err != nil {
			return err
		}
	}
	for name := range want {
		link := filepath.Join(in.host(KataDir), name)
		target := path.Join(path.Base(CurrentLink), name)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		if err := atomicfile.Symlink(target, link); err != nil {
			return err
		}
	}
	return nil
}

// Current returns the version directory /opt/kata/current points at (as the host sees
// it), or "" when there is none.
func (in Installer) Current() (string, error) {
	target, err := os.Readlink(in.host(CurrentLink))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if !path.IsAbs(target) {
		target = path.Join(KataDir, target)
	}
	return target, nil
}

// Verify re-hashes the active version against its manifest and the digest recorded at
// install time, and checks the links into it. It returns the problems found; none means
// intact.
func (in Installer) Verify(digest string) ([]string, error) {
	current, err := in.Current()
	if err != nil {
		return nil, err
	}
	if current == "" {
		return []string{CurrentLink + " is missing"}, nil
	}
	problems, err := VerifyDir(in.host(current), digest)
	if err != nil {
		return nil, err
	}
	release, err := os.ReadDir(in.host(current))
	if err != nil {
		return nil, err
	}
	for _, e := range release {
		if e.Name() == ManifestName {
			continue
		}
		want := path.Join(path.Base(CurrentLink), e.Name())
		if got, err := os.Readlink(filepath.Join(in.host(KataDir), e.Name())); err != nil || got != want {
			problems = append(problems, fmt.Sprintf("%s/%s does not link to %s", KataDir, e.Name(), want))
		}
	}
	return problems, nil
}

// Prune removes every version directory except keep (the active one and the one before
// it, which running VMs may still use).
func (in Installer) Prune(keep ...string) error {
	entries, err := os.ReadDir(in.host(VersionsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		hostDir := path.Join(VersionsDir, e.Name())
		if slices.Contains(keep, hostDir) {
			continue
		}
		if err := os.RemoveAll(in.host(hostDir)); err != nil {
			return err
		}
	}
	return atomicfile.SyncDir(in.host(VersionsDir))
}

// Remove deletes isolator's links, every version and /opt/kata itself when nothing else
// is left in it. Idempotent.
func (in Installer) Remove() error {
	if err := in.checkKataDirIsOurs(); err != nil {
		return err
	}
	entries, err := os.ReadDir(in.host(KataDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// Links first, so nothing resolves into a half-removed version.
	for _, e := range entries {
		if e.Name() == path.Base(VersionsDir) {
			continue
		}
		if err := atomicfile.Remove(filepath.Join(in.host(KataDir), e.Name())); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(in.host(VersionsDir)); err != nil {
		return err
	}
	// /opt/kata may be a mount point (the DaemonSet mounts it): then it stays, empty.
	if err := os.Remove(in.host(KataDir)); err == nil {
		return atomicfile.SyncDir(in.host(path.Dir(KataDir)))
	}
	return atomicfile.SyncDir(in.host(KataDir))
}

// Check runs kata-runtime check where the release ships it (through Exec, chrooted into
// the host root, since kata-runtime reads host paths).
func (in Installer) Check(ctx context.Context) (ran bool, err error) {
	bin := path.Join(KataDir, "bin", "kata-runtime")
	// Through the links, so it is the active version's.
	if _, err := os.Stat(in.host(bin)); err != nil {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, checkTimeout)
	defer cancel()
	out, err := in.Exec.Command(ctx, bin, "check").CombinedOutput()
	if err != nil {
		return true, fmt.Errorf("kata-runtime check: %w: %s", err, strings.TrimSpace(lastLines(out, 5)))
	}
	return true, nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Extract copies a Kata release, a tarball or a directory holding ./opt/kata, into dst
// (which becomes the kata directory: dst/bin, dst/share, ...) and returns the release's
// version ("local" for a directory). The node image is built with it.
func Extract(src, dst string) (string, error) {
	st, err := os.Stat(src)
	if err != nil {
		return "", err
	}
	if st.IsDir() {
		root := filepath.Join(src, "opt", "kata")
		if _, err := os.Stat(filepath.Join(root, "bin")); err != nil {
			return "", fmt.Errorf("directory must hold ./opt/kata/bin (the kata-static layout): %w", err)
		}
		return "local", copyTree(root, dst)
	}
	m := tarballName.FindStringSubmatch(filepath.Base(src))
	if m == nil {
		return "", fmt.Errorf("file name must be kata-go-static-<version>-<arch>.tar.zst (Kata 4 and later) or kata-static-<version>-<arch>.tar.zst (3.21 and later), .tar.xz or .tar.gz, or a directory holding ./opt/kata")
	}
	f, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	switch m[3] {
	case ".zst":
		// Kata's own releases since 3.21.0. A window of 64 MiB bounds the decoder's
		// memory whatever the frame header claims.
		zr, err := zstd.NewReader(r, zstd.WithDecoderMaxWindow(64<<20), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return "", fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	case ".xz":
		if r, err = xz.NewReader(r); err != nil {
			return "", fmt.Errorf("xz: %w", err)
		}
	case ".gz":
		if r, err = gzip.NewReader(r); err != nil {
			return "", fmt.Errorf("gzip: %w", err)
		}
	}
	if err := untar(r, dst); err != nil {
		if m[3] != "" {
			return "", fmt.Errorf("reading the %s-compressed tarball: %w", map[string]string{".zst": "zstd", ".xz": "xz", ".gz": "gzip"}[m[3]], err)
		}
		return "", err
	}
	return m[1], nil
}

// untar extracts the ./opt/kata part of a kata-static tarball into dst.
func untar(r io.Reader, dst string) error {
	tr := tar.NewReader(r)
	found := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("tar: %w", err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		rel, ok := strings.CutPrefix(name, "opt/kata/")
		if !ok || rel == "" || strings.HasPrefix(rel, "../") {
			continue // only ./opt/kata/... belongs to the release
		}
		found = true
		target := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := writeFile(target, tr, fs.FileMode(h.Mode)&0o777); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, target); err != nil {
				return err
			}
		case tar.TypeLink:
			linked, ok := strings.CutPrefix(path.Clean(strings.TrimPrefix(h.Linkname, "./")), "opt/kata/")
			if !ok {
				return fmt.Errorf("tar: hard link %s points outside opt/kata", h.Name)
			}
			if err := copyFile(filepath.Join(dst, filepath.FromSlash(linked)), target); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tar: %s has an unsupported type %q", h.Name, h.Typeflag)
		}
	}
	if !found {
		return errors.New("tarball holds no ./opt/kata entries")
	}
	return nil
}

func writeFile(p string, r io.Reader, mode fs.FileMode) error {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func copyFile(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	return writeFile(dst, f, st.Mode().Perm())
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case rel == ".":
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(p, target)
		default:
			return fmt.Errorf("%s: unsupported file type", p)
		}
	})
}

// buildManifest lists every file's sha256 and every symlink's target under dir.
func buildManifest(dir string) ([]byte, error) {
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch {
		case rel == "." || rel == ManifestName || d.IsDir():
			return nil
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			lines = append(lines, "symlink "+target+"  "+rel)
		case d.Type().IsRegular():
			sum, err := hashFile(p)
			if err != nil {
				return err
			}
			lines = append(lines, sum+"  "+rel)
		default:
			return fmt.Errorf("%s: unsupported file type", p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(lines, func(i, j int) bool { return manifestPath(lines[i]) < manifestPath(lines[j]) })
	return []byte(strings.Join(lines, "\n") + "\n"), nil
}

func manifestPath(line string) string {
	i := strings.LastIndex(line, "  ")
	return line[i+2:]
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// VerifyDir checks a version directory against its manifest, and the manifest against
// digest (when digest is not empty). It returns every difference found.
func VerifyDir(dir, digest string) ([]string, error) {
	manifest, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return []string{"manifest missing: " + err.Error()}, nil
	}
	if digest != "" {
		sum := sha256.Sum256(manifest)
		if hex.EncodeToString(sum[:]) != digest {
			return []string{"manifest does not match the digest recorded at install"}, nil
		}
	}
	current, err := buildManifest(dir)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(current, manifest) {
		return nil, nil
	}
	want := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(manifest)), "\n") {
		want[manifestPath(l)] = l
	}
	var problems []string
	for _, l := range strings.Split(strings.TrimSpace(string(current)), "\n") {
		p := manifestPath(l)
		w, ok := want[p]
		switch {
		case !ok:
			problems = append(problems, "unexpected file "+p)
		case w != l:
			problems = append(problems, "changed "+p)
		}
		delete(want, p)
	}
	for p := range want {
		problems = append(problems, "missing "+p)
	}
	sort.Strings(problems)
	return problems, nil
}

// syncTree fsyncs every file and directory under dir before it is renamed into place.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Type()&fs.ModeSymlink != 0 {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		return f.Sync()
	})
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
