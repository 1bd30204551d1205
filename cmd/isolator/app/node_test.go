//go:build !webhookonly

package app

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeCommandUsage(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"install needs artifacts", []string{"node", "install"}, ExitUsage, "--artifacts is required"},
		{"run needs artifacts", []string{"node", "run"}, ExitUsage, "--artifacts is required"},
		{"bad restart mode", []string{"node", "uninstall", "--restart", "reboot"}, ExitUsage, `--restart="reboot": must be one of [systemd signal none]`},
		{"relative host root", []string{"node", "status", "--host-root", "host"}, ExitUsage, "must be an absolute path"},
		{"bad output", []string{"node", "status", "-o", "yaml"}, ExitUsage, "must be text or json"},
		{"no args", []string{"node", "install", "extra", "--artifacts", "x"}, ExitUsage, "unknown command"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(context.Background(), c.args, strings.NewReader(""), &out, &errOut)
			if code != c.wantCode || !strings.Contains(errOut.String(), c.wantErr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut.String(), c.wantCode, c.wantErr)
			}
		})
	}
}

// TestNodeStatusOnEmptyHost runs status against an empty host root: nothing installed,
// no containerd, and it says so with exit 1.
func TestNodeStatusOnEmptyHost(t *testing.T) {
	root := t.TempDir()
	var out, errOut bytes.Buffer
	code := Run(context.Background(), []string{"node", "status", "--host-root", root, "--kvm-device", filepath.Join(root, "kvm")},
		strings.NewReader(""), &out, &errOut)
	if code != ExitFailure {
		t.Fatalf("exit %d, want %d; stderr %s", code, ExitFailure, errOut.String())
	}
	for _, want := range []string{"containerd:   containerd, config /etc/containerd/config.toml", "kvm:          false", "installed:    false", "serving kata: false"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status output lacks %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(filepath.Join(root, "var")); !os.IsNotExist(err) {
		t.Error("status wrote to the host")
	}
}

func TestNodeHelpTeachesByExample(t *testing.T) {
	for _, sub := range []string{"install", "uninstall", "status", "run"} {
		var out, errOut bytes.Buffer
		if code := Run(context.Background(), []string{"node", sub, "--help"}, strings.NewReader(""), &out, &errOut); code != ExitOK {
			t.Fatalf("%s --help: exit %d", sub, code)
		}
		if !strings.Contains(out.String(), "Examples:") || !strings.Contains(out.String(), "--host-root") {
			t.Errorf("node %s --help lacks examples or --host-root:\n%s", sub, out.String())
		}
	}
}
