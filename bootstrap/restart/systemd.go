package restart

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Units are the systemd units that run containerd, in the order isolator looks for an
// active one: plain containerd, then k3s and rke2, which embed their own containerd.
var Units = []string{"containerd.service", "k3s.service", "k3s-agent.service", "rke2-server.service", "rke2-agent.service"}

// Systemd restarts containerd's unit over D-Bus and waits for the job's result.
type Systemd struct {
	// HostRoot is where the node's filesystem is mounted; the D-Bus sockets are under it.
	HostRoot string
	// Unit, when set, is restarted; otherwise the first active unit of Units is.
	Unit    string
	Timeout time.Duration
}

// Describe names the restart.
func (s Systemd) Describe() string {
	if s.Unit != "" {
		return "systemd restart of " + s.Unit
	}
	return "systemd restart of containerd's unit"
}

// Restart restarts the unit and waits for systemd's job to finish.
func (s Systemd) Restart(ctx context.Context) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := s.connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	unit := s.Unit
	if unit == "" {
		statuses, err := conn.ListUnitsByNamesContext(ctx, Units)
		if err != nil {
			return fmt.Errorf("systemd: list units: %w", err)
		}
		if unit, err = ChooseUnit(statuses); err != nil {
			return err
		}
	}
	done := make(chan string, 1)
	if _, err := conn.RestartUnitContext(ctx, unit, "replace", done); err != nil {
		return fmt.Errorf("systemd: restart %s: %w", unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("systemd: restart %s: job %s (see journalctl -u %s)", unit, result, unit)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("systemd: restart %s: %w", unit, ctx.Err())
	}
}

// ChooseUnit picks the active unit that runs containerd.
func ChooseUnit(statuses []sdbus.UnitStatus) (string, error) {
	byName := map[string]sdbus.UnitStatus{}
	for _, s := range statuses {
		byName[s.Name] = s
	}
	for _, u := range Units {
		if byName[u].ActiveState == "active" {
			return u, nil
		}
	}
	return "", fmt.Errorf("systemd: none of %v is active; pass --restart=signal or --restart=none if containerd runs outside systemd", Units)
}

// connect talks to systemd on its private socket, or else on the system bus.
func (s Systemd) connect(ctx context.Context) (*sdbus.Conn, error) {
	private := filepath.Join(s.HostRoot, "run/systemd/private")
	system := filepath.Join(s.HostRoot, "run/dbus/system_bus_socket")
	conn, errPrivate := sdbus.NewConnection(dialer(ctx, private, false))
	if errPrivate == nil {
		return conn, nil
	}
	conn, errSystem := sdbus.NewConnection(dialer(ctx, system, true))
	if errSystem == nil {
		return conn, nil
	}
	return nil, fmt.Errorf("systemd: cannot reach D-Bus: %w", errors.Join(
		fmt.Errorf("%s: %w", private, errPrivate), fmt.Errorf("%s: %w", system, errSystem)))
}

func dialer(ctx context.Context, socket string, hello bool) func() (*dbus.Conn, error) {
	return func() (*dbus.Conn, error) {
		conn, err := dbus.Dial("unix:path="+socket, dbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			_ = conn.Close()
			return nil, err
		}
		if hello {
			if err := conn.Hello(); err != nil {
				_ = conn.Close()
				return nil, err
			}
		}
		return conn, nil
	}
}
