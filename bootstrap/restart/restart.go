// Package restart restarts a node's containerd so that it reads isolator's drop-in.
// containerd cannot reload its config (SIGHUP makes it exit), so a restart is the only
// way; running containers survive it because their shims are separate processes
// (containerd.service uses KillMode=process).
package restart

import (
	"context"
	"fmt"
)

// Mode names a way to restart containerd (the --restart flag).
type Mode string

// Restart modes.
const (
	ModeSystemd Mode = "systemd" // restart the systemd unit over D-Bus and wait for the job
	ModeSignal  Mode = "signal"  // SIGTERM containerd and let its supervisor start it again
	ModeNone    Mode = "none"    // the admin restarts containerd; isolator only waits for it
)

// Modes lists the valid modes, for flag help and validation.
var Modes = []Mode{ModeSystemd, ModeSignal, ModeNone}

// Restarter restarts containerd. Restart returns once the restart was requested and the
// old process is gone; the caller then waits for CRI to serve again.
type Restarter interface {
	Restart(ctx context.Context) error
	// Describe says what is restarted, for logs and Events.
	Describe() string
}

// None restarts nothing: with --restart=none the admin restarts containerd.
type None struct{}

// Restart does nothing.
func (None) Restart(context.Context) error { return nil }

// Describe says that nothing is restarted.
func (None) Describe() string { return "no restart (--restart=none)" }

// ParseMode checks a --restart value.
func ParseMode(s string) (Mode, error) {
	for _, m := range Modes {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("--restart=%q: must be one of %v", s, Modes)
}
