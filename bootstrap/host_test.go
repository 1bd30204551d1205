package bootstrap

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/isolator-dev/isolator/bootstrap/hostexec"
)

func TestDetectHost(t *testing.T) {
	cases := []struct {
		name     string
		files    map[string]string // host path -> content
		override string
		want     Host
	}{
		{
			name:  "plain containerd",
			files: map[string]string{"/etc/containerd/config.toml": "version = 2\n", "/usr/bin/containerd": "#!/bin/sh\necho containerd github.com/containerd/containerd 1.6.20~ds1 abc\n"},
			want:  Host{Flavor: FlavorContainerd, MainConfig: "/etc/containerd/config.toml", Binary: "/usr/bin/containerd", Version: "1.6.20~ds1", Socket: "/run/containerd/containerd.sock"},
		},
		{
			name:  "no config, no binary",
			files: map[string]string{},
			want:  Host{Flavor: FlavorContainerd, MainConfig: "/etc/containerd/config.toml", Socket: "/run/containerd/containerd.sock"},
		},
		{
			name: "k3s with containerd 2: v3 template to create",
			files: map[string]string{
				"/var/lib/rancher/k3s/agent/etc/containerd/config.toml": "version = 3\n",
				"/var/lib/rancher/k3s/data/current/bin/containerd":      "#!/bin/sh\necho containerd github.com/k3s-io/containerd v2.1.5-k3s1 abc\n",
			},
			want: Host{Flavor: FlavorK3s, MainConfig: "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl", Template: true,
				Rendered: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml", Binary: "/var/lib/rancher/k3s/data/current/bin/containerd",
				Version: "2.1.5-k3s1", Socket: "/run/k3s/containerd/containerd.sock"},
		},
		{
			name: "rke2 with an existing v2 template",
			files: map[string]string{
				"/var/lib/rancher/rke2/agent/etc/containerd/config.toml":      "version = 2\n",
				"/var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl": "{{ template \"base\" . }}\n",
			},
			want: Host{Flavor: FlavorRKE2, MainConfig: "/var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl", Template: true,
				Rendered: "/var/lib/rancher/rke2/agent/etc/containerd/config.toml", Socket: "/run/k3s/containerd/containerd.sock"},
		},
		{
			name:     "override names a template",
			files:    map[string]string{},
			override: "/srv/containerd/config.toml.tmpl",
			want: Host{Flavor: FlavorContainerd, MainConfig: "/srv/containerd/config.toml.tmpl", Template: true,
				Rendered: "/srv/containerd/config.toml", Socket: "/run/containerd/containerd.sock"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			for p, content := range c.files {
				full := filepath.Join(root, p)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(full, []byte(content), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			got, err := DetectHost(context.Background(), root, hostexec.Runner{Root: root, Direct: true}, c.override, "")
			if err != nil {
				t.Fatal(err)
			}
			if *got != c.want {
				t.Errorf("DetectHost\n got %+v\nwant %+v", *got, c.want)
			}
		})
	}
	if _, err := DetectHost(context.Background(), t.TempDir(), hostexec.Runner{}, "relative/config.toml", ""); err == nil {
		t.Error("a relative --containerd-config was accepted")
	}
}
