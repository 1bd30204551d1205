//go:build e2e

package node_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// fakeSystemd stands for systemd on a real D-Bus (dbus-daemon from Debian): it owns
// org.freedesktop.systemd1 and answers the two Manager calls isolator makes,
// ListUnitsByNames and RestartUnit. A restart does what containerd.service's restart
// does: stop the main process, let it start again, then report the job "done" with the
// JobRemoved signal. The D-Bus client, the bus and containerd are real.
type fakeSystemd struct {
	conn *dbus.Conn
	h    *host

	mu       sync.Mutex
	active   map[string]string // unit -> ActiveState
	restarts []string
	jobs     uint32
}

type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          dbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       dbus.ObjectPath
}

// ListUnitsByNames implements org.freedesktop.systemd1.Manager.ListUnitsByNames.
func (f *fakeSystemd) ListUnitsByNames(names []string) ([]unitStatus, *dbus.Error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]unitStatus, 0, len(names))
	for _, n := range names {
		state, ok := f.active[n]
		load := "loaded"
		if !ok {
			state, load = "inactive", "not-found"
		}
		out = append(out, unitStatus{Name: n, LoadState: load, ActiveState: state, SubState: "running", Path: "/org/freedesktop/systemd1/unit/x", JobPath: "/"})
	}
	return out, nil
}

// RestartUnit implements org.freedesktop.systemd1.Manager.RestartUnit.
func (f *fakeSystemd) RestartUnit(name, mode string) (dbus.ObjectPath, *dbus.Error) {
	f.mu.Lock()
	f.jobs++
	id := f.jobs
	f.restarts = append(f.restarts, name+"/"+mode)
	f.mu.Unlock()
	job := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/systemd1/job/%d", id))
	go func() {
		starts := f.h.starts()
		f.h.sup.Restart()
		for deadline := time.Now().Add(30 * time.Second); f.h.starts() == starts && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		_ = f.conn.Emit("/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager.JobRemoved", id, job, name, "done")
	}()
	return job, nil
}

func (f *fakeSystemd) restartCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.restarts...)
}

// startSystemBus runs dbus-daemon with a socket at <runDir>/dbus/system_bus_socket, which
// isolator sees as /run/dbus/system_bus_socket, and registers the fake systemd on it.
func startSystemBus(t *testing.T, h *host, active map[string]string) *fakeSystemd {
	t.Helper()
	h.runDir = filepath.Join(h.dir, "run")
	sock := filepath.Join(h.runDir, "dbus", "system_bus_socket")
	if err := os.MkdirAll(filepath.Dir(sock), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(h.dir, "dbus.conf")
	conf := `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=` + sock + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	daemon := exec.Command("dbus-daemon", "--config-file="+cfg, "--nofork", "--nopidfile", "--print-address")
	stdout, err := daemon.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatalf("dbus-daemon: %v", err)
	}
	t.Cleanup(func() { _ = daemon.Process.Kill(); _ = daemon.Wait() })
	if _, err := bufio.NewReader(stdout).ReadString('\n'); err != nil {
		t.Fatalf("dbus-daemon did not start: %v", err)
	}

	conn, err := dbus.Dial("unix:path=" + sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	if err := conn.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		t.Fatal(err)
	}
	if err := conn.Hello(); err != nil {
		t.Fatal(err)
	}
	f := &fakeSystemd{conn: conn, h: h, active: active}
	if err := conn.Export(f, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName("org.freedesktop.systemd1", dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("own org.freedesktop.systemd1: %v %v", reply, err)
	}
	return f
}

// TestSystemdRestart installs and uninstalls with --restart systemd: isolator finds the
// active unit over D-Bus, restarts it and waits for the job's result before verifying
// over CRI. systemd itself is the one fake here (see fakeSystemd).
func TestSystemdRestart(t *testing.T) {
	cases := []struct {
		name   string
		active map[string]string
		want   string
	}{
		{name: "containerd.service", active: map[string]string{"containerd.service": "active"}, want: "containerd.service/replace"},
		{name: "k3s-agent.service", active: map[string]string{"containerd.service": "inactive", "k3s-agent.service": "active"}, want: "k3s-agent.service/replace"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHost(t, runtimes(t)[0])
			original := h.writeDefaultConfig()
			h.startContainerd(nil)
			f := startSystemBus(t, h, c.active)

			h.mustIsolator("install", "--artifacts", h.tarball, "--restart", "systemd")
			if got := f.restartCalls(); len(got) != 1 || got[0] != c.want {
				t.Errorf("RestartUnit calls = %v, want [%s]", got, c.want)
			}
			if ok, st := h.served(); !ok {
				t.Fatalf("kata not served after a systemd restart: %+v", st)
			}
			h.mustIsolator("install", "--artifacts", h.tarball, "--restart", "systemd")
			if got := f.restartCalls(); len(got) != 1 {
				t.Errorf("second install restarted the unit: %v", got)
			}
			h.mustIsolator("uninstall", "--restart", "systemd")
			if got := f.restartCalls(); len(got) != 2 {
				t.Errorf("uninstall: RestartUnit calls = %v, want two in all", got)
			}
			if ok, _ := h.served(); ok {
				t.Error("kata still served after uninstall")
			}
			if got := h.config(); string(got) != string(original) {
				t.Error("config differs after uninstall")
			}
		})
	}

	t.Run("no active unit", func(t *testing.T) {
		h := newHost(t, runtimes(t)[0])
		original := h.writeDefaultConfig()
		h.startContainerd(nil)
		startSystemBus(t, h, map[string]string{"containerd.service": "failed"})
		r := h.isolator(nil, "install", "--artifacts", h.tarball, "--restart", "systemd", "--verify-timeout", "3s")
		if r.exit != 1 || !strings.Contains(r.err, "none of [containerd.service") {
			t.Fatalf("install: exit %d\n%s", r.exit, tail(r.err, 5))
		}
		if got := h.config(); string(got) != string(original) {
			t.Error("config not rolled back after a failed systemd restart")
		}
	})
}
