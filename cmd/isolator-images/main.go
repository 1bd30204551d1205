// Command isolator-images builds isolator's two images, isolator-webhook and
// isolator-node, as OCI archives, without a container engine or a registry: the same
// user, entrypoint, command and file paths as the Dockerfile (internal/ociimage), on an
// empty base, since the binaries are static. `make images` runs it; load the archives
// with `ctr images import`, `skopeo copy oci-archive:…` or `crane push`.
package main

import (
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/isolator-dev/isolator/bootstrap/artifacts"
	"github.com/isolator-dev/isolator/internal/ociimage"
)

func main() {
	var (
		out, prefix, tag, webhookBin, nodeBin, kata, arch string
	)
	flag.StringVar(&out, "out", "bin/images", "directory for isolator-webhook.oci.tar and isolator-node.oci.tar")
	flag.StringVar(&prefix, "prefix", "isolator", "image name prefix: <prefix>-webhook and <prefix>-node (e.g. registry.example.com/isolator)")
	flag.StringVar(&tag, "tag", "dev", "image tag")
	flag.StringVar(&webhookBin, "webhook-binary", "bin/isolator-webhook", "the isolator binary built with -tags webhookonly")
	flag.StringVar(&nodeBin, "node-binary", "bin/isolator", "the full isolator binary")
	flag.StringVar(&kata, "kata", "", "the Kata static release for the node image: kata-go-static-<version>-<arch>.tar.zst, or a directory holding ./opt/kata (empty: build only the webhook image)")
	flag.StringVar(&arch, "arch", runtime.GOARCH, "GOARCH the binaries and the Kata release were built for")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: isolator-images [flags]\n\nBuilds isolator's images as OCI archives, without a container engine.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := run(out, prefix, tag, webhookBin, nodeBin, kata, arch); err != nil {
		fmt.Fprintf(os.Stderr, "isolator-images: %v\n", err)
		os.Exit(1)
	}
}

func run(out, prefix, tag, webhookBin, nodeBin, kata, arch string) error {
	for _, bin := range []string{webhookBin, nodeBin} {
		if err := requireStatic(bin); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	build := func(name string, spec ociimage.Spec) error {
		start := time.Now()
		img, err := ociimage.Build(spec)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		file := filepath.Join(out, name+".oci.tar")
		if err := ociimage.WriteArchive(file, spec.Ref, img); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		st, err := os.Stat(file)
		if err != nil {
			return err
		}
		fmt.Printf("%s: %s (%s, %.1f MB) in %v\n", spec.Ref, file, digest, float64(st.Size())/1e6, time.Since(start).Round(time.Millisecond))
		return nil
	}
	if err := build("isolator-webhook", ociimage.Webhook(prefix+"-webhook:"+tag, webhookBin, arch)); err != nil {
		return err
	}
	if kata == "" {
		fmt.Println("isolator-node: skipped (no --kata release given)")
		return nil
	}
	tmp, err := os.MkdirTemp("", "isolator-images-kata-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	version, err := artifacts.Extract(kata, filepath.Join(tmp, "opt", "kata"))
	if err != nil {
		return fmt.Errorf("--kata %s: %w", kata, err)
	}
	fmt.Printf("Kata release %s unpacked from %s\n", version, kata)
	return build("isolator-node", ociimage.Node(prefix+"-node:"+tag, nodeBin, tmp, arch))
}

// requireStatic refuses a dynamically linked binary: the images have no C library.
func requireStatic(bin string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("%s: %w (build it with make images, or CGO_ENABLED=0 GOOS=linux go build)", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked, and the images have no C library: build it with CGO_ENABLED=0 (make images does)", bin)
		}
	}
	return nil
}
