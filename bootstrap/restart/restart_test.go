package restart

import (
	"context"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
)

// TestMain doubles as a long-running process whose command line looks like containerd's,
// for the signal restart tests.
func TestMain(m *testing.M) {
	if os.Getenv("ISOLATOR_FAKE_CONTAINERD") == "1" {
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGTERM)
		if os.Getenv("ISOLATOR_FAKE_CONTAINERD_IGNORE_TERM") == "1" {
			signal.Ignore(syscall.SIGTERM)
		}
		select {
		case <-ch:
			os.Exit(0)
		case <-time.After(time.Minute):
			os.Exit(1)
		}
	}
	os.Exit(m.Run())
}

// startFake starts this test binary under argv0 ".../containerd" with --address sock.
func startFake(t *testing.T, sock string, ignoreTerm bool) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Args = []string{filepath.Join(t.TempDir(), "containerd"), "--address", sock}
	cmd.Env = append(os.Environ(), "ISOLATOR_FAKE_CONTAINERD=1")
	if ignoreTerm {
		cmd.Env = append(cmd.Env, "ISOLATOR_FAKE_CONTAINERD_IGNORE_TERM=1")
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	go func() { _, _ = cmd.Process.Wait() }() // reap, as a supervisor would
	time.Sleep(200 * time.Millisecond)        // let it install its signal handler
	return cmd
}

func TestSignalRestart(t *testing.T) {
	cases := []struct {
		name       string
		pidFile    bool
		ignoreTerm bool
	}{
		{name: "found in /proc by address"},
		{name: "pid file", pidFile: true},
		{name: "SIGKILL after the stop timeout", ignoreTerm: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "containerd.sock")
			cmd := startFake(t, sock, c.ignoreTerm)
			s := Signal{Address: sock, StopTimeout: time.Second}
			if c.pidFile {
				s.PIDFile = filepath.Join(t.TempDir(), "containerd.pid")
				if err := os.WriteFile(s.PIDFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			pid, err := s.FindPID()
			if err != nil || pid != cmd.Process.Pid {
				t.Fatalf("FindPID = %d, %v; want %d", pid, err, cmd.Process.Pid)
			}
			if err := s.Restart(context.Background()); err != nil {
				t.Fatalf("Restart: %v", err)
			}
			if s.alive(cmd.Process.Pid) {
				t.Fatalf("containerd pid %d still runs after Restart", cmd.Process.Pid)
			}
		})
	}
}

func TestSignalNoContainerd(t *testing.T) {
	s := Signal{ProcRoot: t.TempDir(), Address: "/x.sock"}
	if _, err := s.FindPID(); err == nil {
		t.Fatal("FindPID found a containerd in an empty /proc")
	}
}

func TestAddressOf(t *testing.T) {
	cases := map[string][]string{
		"/a.sock":                         {"containerd", "--address", "/a.sock"},
		"/b.sock":                         {"containerd", "--address=/b.sock"},
		"/c.sock":                         {"containerd", "-a", "/c.sock", "--config", "x"},
		"/run/containerd/containerd.sock": {"containerd"},
	}
	for want, args := range cases {
		if got := addressOf(args); got != want {
			t.Errorf("addressOf(%v) = %s, want %s", args, got, want)
		}
	}
}

func TestIsContainerd(t *testing.T) {
	cases := map[string]bool{
		"/usr/bin/containerd":                   true,
		"/root/.cache/isolator/bin/containerd2": true,
		"/usr/bin/containerd-shim-runc-v2":      false,
		"/usr/bin/ctr":                          false,
		"/usr/bin/dockerd":                      false,
	}
	for argv0, want := range cases {
		if got := isContainerd([]string{argv0}); got != want {
			t.Errorf("isContainerd(%s) = %v, want %v", argv0, got, want)
		}
	}
}

func TestChooseUnit(t *testing.T) {
	cases := []struct {
		name     string
		statuses []sdbus.UnitStatus
		want     string
		wantErr  bool
	}{
		{"containerd", []sdbus.UnitStatus{{Name: "containerd.service", ActiveState: "active"}, {Name: "k3s.service", ActiveState: "inactive"}}, "containerd.service", false},
		{"k3s agent", []sdbus.UnitStatus{{Name: "containerd.service", ActiveState: "inactive"}, {Name: "k3s-agent.service", ActiveState: "active"}}, "k3s-agent.service", false},
		{"rke2 server", []sdbus.UnitStatus{{Name: "rke2-server.service", ActiveState: "active"}}, "rke2-server.service", false},
		{"none active", []sdbus.UnitStatus{{Name: "containerd.service", ActiveState: "failed"}}, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ChooseUnit(c.statuses)
			if got != c.want || (err != nil) != c.wantErr {
				t.Errorf("ChooseUnit = %q, %v; want %q (error %v)", got, err, c.want, c.wantErr)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range Modes {
		if got, err := ParseMode(string(m)); err != nil || got != m {
			t.Errorf("ParseMode(%s) = %s, %v", m, got, err)
		}
	}
	if _, err := ParseMode("reboot"); err == nil {
		t.Error("ParseMode(reboot) accepted")
	}
}
