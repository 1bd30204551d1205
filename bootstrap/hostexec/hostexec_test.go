package hostexec

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommand(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "bin", "hello")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho hello \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Direct: the host path under Root, run in this filesystem view.
	out, err := Runner{Root: root, Direct: true}.Command(ctx, "/bin/hello", "node").Output()
	if err != nil || strings.TrimSpace(string(out)) != "hello node" {
		t.Errorf("direct: %q, %v", out, err)
	}
	// Root "/": the path as given.
	if cmd := (Runner{Root: "/"}).Command(ctx, "/usr/bin/containerd", "--version"); cmd.Path != "/usr/bin/containerd" || cmd.SysProcAttr != nil {
		t.Errorf("root /: path %s, attrs %+v", cmd.Path, cmd.SysProcAttr)
	}
	// Any other root: chrooted there.
	cmd := Runner{Root: root}.Command(ctx, "/bin/hello")
	if cmd.SysProcAttr == nil || cmd.SysProcAttr.Chroot != root || cmd.Dir != "/" {
		t.Fatalf("chroot command: %+v dir %q", cmd.SysProcAttr, cmd.Dir)
	}
	if os.Geteuid() == 0 {
		// Without a shell inside the root the script cannot start: chroot really applies.
		if err := cmd.Run(); err == nil {
			t.Error("the script ran although the chroot has no /bin/sh")
		} else if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			t.Errorf("unexpected exit error %v: want a start failure", err)
		}
	}
}
