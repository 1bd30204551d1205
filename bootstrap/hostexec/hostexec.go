// Package hostexec runs the node's own binaries (containerd, kata-runtime) from inside
// isolator's container, where the node's filesystem is mounted at a host root such as
// /host. The binaries expect host paths and host libraries, so they run chrooted into
// the host root.
package hostexec

import (
	"context"
	"os/exec"
	"path/filepath"
	"syscall"
)

// Runner runs binaries of the host whose filesystem is at Root.
type Runner struct {
	Root string
	// Direct runs Root+name without chroot, in isolator's own filesystem view. Tests use
	// it for fake host roots that hold scripts but no shell of their own.
	Direct bool
}

// Command returns the command that runs the host binary name (a host path) with args.
func (r Runner) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	root := filepath.Clean(r.Root)
	switch {
	case root == "/" || root == ".":
		return exec.CommandContext(ctx, name, args...)
	case r.Direct:
		return exec.CommandContext(ctx, filepath.Join(root, name), args...)
	default:
		// chroot(2) from Go, not the chroot binary: the node image need not ship one.
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
		cmd.Dir = "/"
		return cmd
	}
}
