package harness

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestProcessStop(t *testing.T) {
	tests := []struct {
		name string
		// script runs under /bin/sh; it prints "trap set" once its signal handling is set
		// (the log's first line holds the command, so the marker is built by printf).
		script   string
		wantExit string
	}{
		{
			name:     "exits on SIGTERM",
			script:   `printf 'trap %s\n' set; exec sleep 60`,
			wantExit: "signal: terminated",
		},
		{
			name:     "ignores SIGTERM and is killed",
			script:   `trap '' TERM; printf 'trap %s\n' set; while :; do sleep 0.05; done`,
			wantExit: "signal: killed",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logPath := filepath.Join(t.TempDir(), "logs", "p.log")
			p, err := StartProcess(ProcessSpec{Name: "script", Path: "/bin/sh", Args: []string{"-c", tt.script}, LogPath: logPath})
			if err != nil {
				t.Fatal(err)
			}
			waitForLog(t, logPath, "trap set")
			if exited, _ := p.Exited(); exited {
				t.Fatal("process exited before Stop")
			}
			if err := p.Stop(300 * time.Millisecond); err != nil {
				t.Fatalf("Stop: %v", err)
			}
			exited, exitErr := p.Exited()
			if !exited {
				t.Fatal("process still running after Stop")
			}
			if exitErr == nil || exitErr.Error() != tt.wantExit {
				t.Errorf("exit = %v, want %s", exitErr, tt.wantExit)
			}
			if err := p.Stop(time.Second); err != nil {
				t.Errorf("second Stop: %v", err)
			}
			log := readFile(t, logPath)
			if !strings.Contains(string(log), "script exited: "+tt.wantExit) {
				t.Errorf("log does not record the exit:\n%s", log)
			}
		})
	}
}

func TestStartProcessErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		spec ProcessSpec
		want string
	}{
		{name: "no log", spec: ProcessSpec{Name: "x", Path: "/bin/true"}, want: "start x: ProcessSpec.LogPath is empty"},
		{name: "missing binary", spec: ProcessSpec{Name: "y", Path: filepath.Join(dir, "nope"), LogPath: filepath.Join(dir, "y.log")}, want: "start y (" + filepath.Join(dir, "nope") + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := StartProcess(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestWaitReady(t *testing.T) {
	t.Run("ready after some failures", func(t *testing.T) {
		var calls atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if calls.Add(1) < 3 {
				http.Error(w, "not yet", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		}))
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := WaitReady(ctx, nil, ReadyCheck{URL: srv.URL, Interval: 10 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if got := calls.Load(); got != 3 {
			t.Errorf("polled %d times, want 3", got)
		}
	})

	t.Run("https with a self-signed certificate", func(t *testing.T) {
		srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		defer srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := WaitReady(ctx, nil, ReadyCheck{URL: srv.URL}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("process exits", func(t *testing.T) {
		logPath := filepath.Join(t.TempDir(), "crash.log")
		p, err := StartProcess(ProcessSpec{Name: "crasher", Path: "/bin/sh", Args: []string{"-c", "echo 'bind: address already in use' >&2; exit 3"}, LogPath: logPath})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// Port 1 on loopback refuses connections: the process's exit must end the wait.
		err = WaitReady(ctx, p, ReadyCheck{URL: "http://127.0.0.1:1/readyz"})
		if err == nil {
			t.Fatal("WaitReady succeeded for a process that exited")
		}
		for _, want := range []string{"crasher exited before http://127.0.0.1:1/readyz was ready", "exit status 3", "bind: address already in use", logPath} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
		if ctx.Err() != nil {
			t.Errorf("WaitReady waited for the deadline instead of noticing the exit")
		}
	})

	t.Run("timeout carries the last answer and log", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "[-]etcd failed", http.StatusInternalServerError)
		}))
		defer srv.Close()
		logPath := filepath.Join(t.TempDir(), "slow.log")
		p, err := StartProcess(ProcessSpec{Name: "slow", Path: "/bin/sh", Args: []string{"-c", "printf 'waiting for %s\\n' etcd; exec sleep 60"}, LogPath: logPath})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = p.Stop(time.Second) }()
		waitForLog(t, logPath, "waiting for etcd")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err = WaitReady(ctx, p, ReadyCheck{URL: srv.URL, Interval: 20 * time.Millisecond})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
		for _, want := range []string{"slow not ready at " + srv.URL, "500 Internal Server Error: [-]etcd failed", "waiting for etcd"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error lacks %q:\n%v", want, err)
			}
		}
	})
}

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	if err := os.WriteFile(path, []byte("a\nb\nc\nd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		n    int
		want string
	}{
		{n: 2, want: "c\nd"},
		{n: 4, want: "a\nb\nc\nd"},
		{n: 10, want: "a\nb\nc\nd"},
	}
	for _, tt := range tests {
		if got := LogTail(path, tt.n); got != tt.want {
			t.Errorf("LogTail(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	if got := LogTail(filepath.Join(t.TempDir(), "missing.log"), 3); !strings.Contains(got, "cannot read log") {
		t.Errorf("LogTail of a missing file = %q", got)
	}
}

func waitForLog(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && strings.Contains(string(data), want) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s never logged %q:\n%s", path, want, LogTail(path, 20))
}
