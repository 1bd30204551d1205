package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/isolator-dev/isolator/bootstrap/containerd"
	"github.com/isolator-dev/isolator/bootstrap/hostexec"
)

// Flavor is the kind of containerd installation on the node.
type Flavor string

// Flavors.
const (
	FlavorContainerd Flavor = "containerd" // a containerd of its own, /etc/containerd/config.toml
	FlavorK3s        Flavor = "k3s"        // k3s's embedded containerd, configured by template
	FlavorRKE2       Flavor = "rke2"       // rke2's embedded containerd, configured by template
)

// Host is what isolator detected about the node's containerd.
type Host struct {
	Flavor Flavor
	// MainConfig is the host path of the config containerd starts with, or for k3s/rke2
	// of the template it is rendered from.
	MainConfig string
	Template   bool
	// Rendered is, for k3s/rke2, the config.toml rendered from the template.
	Rendered string
	// Binary is the host path of the containerd binary, "" when none was found.
	Binary string
	// Version is the binary's release, "" when unknown.
	Version string
	// Socket is containerd's socket as a host path.
	Socket string
}

const (
	defaultConfig = "/etc/containerd/config.toml"
	defaultSocket = "/run/containerd/containerd.sock"
	rancherSocket = "/run/k3s/containerd/containerd.sock"
)

var containerdBinaries = []string{"/usr/bin/containerd", "/usr/local/bin/containerd", "/usr/sbin/containerd"}

// DetectHost finds the node's containerd config, binary and socket under hostRoot.
// configOverride (--containerd-config) and binaryOverride replace detection.
func DetectHost(ctx context.Context, hostRoot string, run hostexec.Runner, configOverride, binaryOverride string) (*Host, error) {
	h := &Host{Flavor: FlavorContainerd, MainConfig: defaultConfig, Socket: defaultSocket}
	hp := func(p string) string { return filepath.Join(hostRoot, p) }
	binaries := containerdBinaries
	for _, d := range []struct {
		flavor Flavor
		dir    string
		bins   []string
	}{
		{FlavorRKE2, "/var/lib/rancher/rke2/agent/etc/containerd", []string{"/var/lib/rancher/rke2/bin/containerd"}},
		{FlavorK3s, "/var/lib/rancher/k3s/agent/etc/containerd", []string{"/var/lib/rancher/k3s/data/current/bin/containerd"}},
	} {
		if _, err := os.Stat(hp(d.dir)); err != nil {
			continue
		}
		h.Flavor, h.Template, h.Socket = d.flavor, true, rancherSocket
		h.Rendered = path.Join(d.dir, "config.toml")
		h.MainConfig = rancherTemplate(hp, d.dir, h.Rendered)
		binaries = d.bins
		break
	}
	if configOverride != "" {
		if !path.IsAbs(configOverride) {
			return nil, fmt.Errorf("--containerd-config %q: must be an absolute host path", configOverride)
		}
		h.MainConfig = configOverride
		h.Template = strings.HasSuffix(configOverride, ".tmpl")
		if h.Template {
			h.Rendered = path.Join(path.Dir(configOverride), "config.toml")
		} else {
			h.Rendered = ""
		}
	}
	if binaryOverride != "" {
		binaries = []string{binaryOverride}
	}
	for _, b := range binaries {
		if st, err := os.Stat(hp(b)); err == nil && !st.IsDir() {
			h.Binary = b
			break
		}
	}
	if h.Binary != "" {
		out, err := run.Command(ctx, h.Binary, "--version").Output()
		if err == nil {
			h.Version = parseVersion(string(out))
		}
	}
	return h, nil
}

// rancherTemplate picks the k3s/rke2 template: an existing config-v3.toml.tmpl or
// config.toml.tmpl, or else the name matching the rendered config's schema, to create.
func rancherTemplate(hp func(string) string, dir, rendered string) string {
	for _, name := range []string{"config-v3.toml.tmpl", "config.toml.tmpl"} {
		if _, err := os.Stat(hp(path.Join(dir, name))); err == nil {
			return path.Join(dir, name)
		}
	}
	var doc struct {
		Version int `toml:"version"`
	}
	if data, err := os.ReadFile(hp(rendered)); err == nil && toml.Unmarshal(data, &doc) == nil && doc.Version >= 3 {
		return path.Join(dir, "config-v3.toml.tmpl")
	}
	return path.Join(dir, "config.toml.tmpl")
}

// parseVersion reads "containerd github.com/containerd/containerd/v2 2.4.2 <commit>".
func parseVersion(out string) string {
	fields := strings.Fields(out)
	if len(fields) < 3 {
		return ""
	}
	return strings.TrimPrefix(fields[2], "v")
}

// readHostFile reads a host file; a missing file is not an error.
func readHostFile(hostRoot, p string) (containerd.File, error) {
	f := containerd.File{Path: p}
	data, err := os.ReadFile(filepath.Join(hostRoot, p))
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, err
	}
	f.Data, f.Exists = data, true
	return f, nil
}
