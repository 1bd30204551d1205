package restart

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Signal restarts a containerd that runs under a supervisor other than systemd (a
// container entrypoint, runit, a test): it sends SIGTERM and waits for the process to
// exit; the supervisor starts it again. After StopTimeout it sends SIGKILL, which
// leaves running containers alone as well.
type Signal struct {
	// ProcRoot is the host's /proc (the DaemonSet runs with hostPID).
	ProcRoot string
	// PIDFile, when set, holds containerd's pid; otherwise containerd is found in ProcRoot.
	PIDFile string
	// Address is containerd's socket path; it picks the right process when several
	// containerd processes run.
	Address     string
	StopTimeout time.Duration
}

// Describe names the restart.
func (s Signal) Describe() string { return "SIGTERM to containerd (" + s.Address + ")" }

// ErrNotRunning means no containerd process was found: it is down already (crashing,
// or between two starts of its supervisor), so there is nothing to stop.
var ErrNotRunning = errors.New("no containerd process found")

// Restart stops containerd and waits until the process is gone. When containerd is not
// running it returns nil: its supervisor starts it with the config on disk, which is
// what a restart is for.
func (s Signal) Restart(ctx context.Context) error {
	pid, err := s.FindPID()
	if errors.Is(err, ErrNotRunning) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM containerd pid %d: %w", pid, err)
	}
	timeout := s.StopTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if s.waitGone(ctx, pid, timeout) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGKILL containerd pid %d after %s: %w", pid, timeout, err)
	}
	if !s.waitGone(ctx, pid, 10*time.Second) {
		return fmt.Errorf("containerd pid %d did not exit after SIGTERM and SIGKILL", pid)
	}
	return nil
}

func (s Signal) waitGone(ctx context.Context, pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !s.alive(pid) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(20 * time.Millisecond):
		}
	}
	return !s.alive(pid)
}

// alive reports whether pid runs; a zombie waiting for its supervisor counts as gone.
func (s Signal) alive(pid int) bool {
	stat, err := os.ReadFile(filepath.Join(s.procRoot(), strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func (s Signal) procRoot() string {
	if s.ProcRoot == "" {
		return "/proc"
	}
	return s.ProcRoot
}

// FindPID returns containerd's pid from PIDFile or from the process table.
func (s Signal) FindPID() (int, error) {
	if s.PIDFile != "" {
		data, err := os.ReadFile(s.PIDFile)
		if err != nil {
			return 0, fmt.Errorf("containerd pid file: %w", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
		if err != nil || pid <= 0 {
			return 0, fmt.Errorf("containerd pid file %s: %q is not a pid", s.PIDFile, data)
		}
		return pid, nil
	}
	entries, err := os.ReadDir(s.procRoot())
	if err != nil {
		return 0, err
	}
	var all, matching []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(s.procRoot(), e.Name(), "cmdline"))
		if err != nil || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !isContainerd(args) || !s.alive(pid) {
			continue
		}
		all = append(all, pid)
		if s.Address != "" && addressOf(args) == s.Address {
			matching = append(matching, pid)
		}
	}
	switch {
	case len(matching) == 1:
		return matching[0], nil
	case len(matching) == 0 && len(all) == 1:
		return all[0], nil
	case len(all) == 0:
		return 0, fmt.Errorf("%w in %s (the DaemonSet needs hostPID: true)", ErrNotRunning, s.procRoot())
	default:
		return 0, fmt.Errorf("%d containerd processes found (pids %v) and none or several listen on %s: pass --containerd-pid-file", len(all), all, s.Address)
	}
}

// isContainerd recognises containerd's command line (not a shim, not ctr).
func isContainerd(args []string) bool {
	if len(args) == 0 {
		return false
	}
	base := filepath.Base(args[0])
	return strings.HasPrefix(base, "containerd") && !strings.Contains(base, "shim") && !strings.Contains(base, "stress")
}

// addressOf returns the --address/-a value of a containerd command line, or containerd's
// default socket.
func addressOf(args []string) string {
	for i, a := range args {
		switch {
		case (a == "--address" || a == "-a") && i+1 < len(args):
			return args[i+1]
		case strings.HasPrefix(a, "--address="):
			return strings.TrimPrefix(a, "--address=")
		}
	}
	return "/run/containerd/containerd.sock"
}
