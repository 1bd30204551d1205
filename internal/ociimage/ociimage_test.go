package ociimage

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// TestBuild: the image carries the files at their paths with their modes, the recipe's
// config, and the same inputs give the same digest (reproducible builds).
func TestBuild(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "isolator")
	if err := os.WriteFile(bin, []byte("#!binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	kata := filepath.Join(dir, "kata")
	if err := os.MkdirAll(filepath.Join(kata, "opt", "kata", "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(kata, "opt", "kata", "bin", "kata-runtime"), []byte("rt"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("bin/kata-runtime", filepath.Join(kata, "opt", "kata", "link")); err != nil {
		t.Fatal(err)
	}
	spec := Node("isolator-node:test", bin, kata, "arm64")
	img, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Build(spec)
	d1, _ := img.Digest()
	d2, _ := again.Digest()
	if d1 != d2 {
		t.Errorf("two builds of the same inputs: %s and %s", d1, d2)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "arm64" || !slices.Equal(cf.Config.Entrypoint, Entrypoint) || !slices.Equal(cf.Config.Cmd, NodeCmd) || cf.Config.User != "" {
		t.Errorf("config: %s/%s entrypoint %q cmd %q user %q", cf.OS, cf.Architecture, cf.Config.Entrypoint, cf.Config.Cmd, cf.Config.User)
	}
	got := map[string]string{}
	for _, h := range tarHeaders(t, mutate.Extract(img)) {
		got[strings.TrimSuffix(h.Name, "/")] = fmt.Sprintf("%c %o %s", h.Typeflag, h.Mode, h.Linkname)
	}
	for name, want := range map[string]string{
		"isolator": "0 755 ",
		"opt/isolator/kata/opt/kata/bin/kata-runtime": "0 755 ",
		"opt/isolator/kata/opt/kata/link":             "2 777 bin/kata-runtime",
		"opt/isolator/kata":                           "5 755 ",
		"tmp":                                         "5 1777 ",
	} {
		if got[name] != want {
			t.Errorf("%s: %q, want %q", name, got[name], want)
		}
	}

	archive := filepath.Join(dir, "node.oci.tar")
	if err := WriteArchive(archive, spec.Ref, img); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	for _, h := range tarHeaders(t, f) {
		names = append(names, h.Name)
	}
	for _, want := range []string{"oci-layout", "index.json", "blobs/sha256/" + d1.Hex} {
		if !slices.Contains(names, want) {
			t.Errorf("archive lacks %s: %v", want, names)
		}
	}
}

// tarHeaders reads every entry's header of a tar stream.
func tarHeaders(t *testing.T, r io.Reader) []*tar.Header {
	t.Helper()
	var out []*tar.Header
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, h)
	}
}
