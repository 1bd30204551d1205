// Package ociimage builds isolator's container images as OCI archives, without a
// container engine or a registry: one layer of files on an empty base (isolator's
// binaries are static), the user, entrypoint and environment the Dockerfile declares.
// `make images` and the e2e suites build with it; the archives load with
// `ctr images import` or `skopeo copy oci-archive:…`.
package ociimage

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one file of the image.
type File struct {
	// Path is absolute in the image, e.g. /isolator.
	Path string
	// Source is the file or directory on this machine to copy there; a directory is
	// copied whole, with its symlinks.
	Source string
	// Data is the content when Source is empty.
	Data []byte
	// Dir makes an empty directory (distroless images have /tmp, mode 1777).
	Dir bool
	// Mode is the Unix mode of a Data file (default 0o644) or a Dir (default 0o755;
	// 0o1777 for a sticky /tmp).
	Mode fs.FileMode
}

// Spec is an image.
type Spec struct {
	// Ref names the image in the archive, e.g. localhost/isolator-node:dev.
	Ref        string
	Files      []File
	User       string
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	// Arch is the GOARCH the binaries are built for; OS is always linux.
	Arch string
}

// epoch is every file's and the image's time, so that the same inputs give the same
// digest.
var epoch = time.Unix(0, 0).UTC()

// Build returns the image described by s.
func Build(s Spec) (v1.Image, error) {
	layerTar, err := layerBytes(s.Files)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", s.Arch
	cf.Created = v1.Time{Time: epoch}
	cf.Config.User = s.User
	cf.Config.Entrypoint = s.Entrypoint
	cf.Config.Cmd = s.Cmd
	cf.Config.Env = s.Env
	cf.Config.WorkingDir = s.WorkingDir
	return mutate.ConfigFile(img, cf)
}

// layerBytes writes the files, and every directory above them, as one uncompressed tar.
func layerBytes(files []File) ([]byte, error) {
	type entry struct {
		hdr  *tar.Header
		data []byte
	}
	entries := map[string]entry{}
	addDirs := func(p string) {
		for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
			name := strings.TrimPrefix(d, "/") + "/"
			if _, ok := entries[name]; !ok {
				entries[name] = entry{hdr: &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}}
			}
		}
	}
	add := func(p string, hdr *tar.Header, data []byte) {
		hdr.Name, hdr.ModTime = strings.TrimPrefix(p, "/"), epoch
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		addDirs(p)
		entries[hdr.Name] = entry{hdr: hdr, data: data}
	}
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image file %q: the path must be absolute", f.Path)
		}
		if f.Dir {
			mode := f.Mode
			if mode == 0 {
				mode = 0o755
			}
			add(f.Path, &tar.Header{Typeflag: tar.TypeDir, Mode: int64(mode)}, nil)
			continue
		}
		if f.Source == "" {
			mode := f.Mode
			if mode == 0 {
				mode = 0o644
			}
			add(f.Path, &tar.Header{Typeflag: tar.TypeReg, Mode: int64(mode), Size: int64(len(f.Data))}, f.Data)
			continue
		}
		err := filepath.WalkDir(f.Source, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(f.Source, p)
			dst := path.Join(f.Path, filepath.ToSlash(rel))
			info, err := d.Info()
			if err != nil {
				return err
			}
			switch {
			case d.IsDir():
				add(dst, &tar.Header{Typeflag: tar.TypeDir, Mode: int64(info.Mode().Perm())}, nil)
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(p)
				if err != nil {
					return err
				}
				add(dst, &tar.Header{Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}, nil)
			case info.Mode().IsRegular():
				data, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				add(dst, &tar.Header{Typeflag: tar.TypeReg, Mode: int64(info.Mode().Perm()), Size: int64(len(data))}, data)
			default:
				return fmt.Errorf("%s: only files, directories and symlinks go into an image", p)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("image file %s from %s: %w", f.Path, f.Source, err)
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive writes img as an OCI archive (an OCI image layout in a tar) to file,
// named ref: the index carries ref in both org.opencontainers.image.ref.name and
// containerd's io.containerd.image.name, so `ctr images import` keeps the name.
func WriteArchive(file, ref string, img v1.Image) error {
	dir, err := os.MkdirTemp(filepath.Dir(file), ".oci-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
		"io.containerd.image.name":          ref,
	})); err != nil {
		return err
	}
	return tarDir(dir, file)
}

// tarDir writes the tree under dir into a tar at file, replacing it only when complete.
func tarDir(dir, file string) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".oci-archive-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		hdr.Name, hdr.ModTime = filepath.ToSlash(rel), epoch
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = tmp.Close()
	}
	if err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", file, err)
	}
	return os.Rename(tmp.Name(), file)
}
