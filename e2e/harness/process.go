package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultStopGrace is how long Stop waits after SIGTERM before it sends SIGKILL.
const DefaultStopGrace = 10 * time.Second

// ProcessSpec says how to run one server process.
type ProcessSpec struct {
	// Name identifies the process in errors, e.g. "kube-apiserver".
	Name string
	// Path is the binary to run.
	Path string
	Args []string
	// Env is added to the test's own environment; later entries win.
	Env []string
	// Dir is the working directory; empty means the test's.
	Dir string
	// LogPath receives stdout and stderr. The file is appended to, so that a restarted
	// process keeps the history of the earlier run in the same file.
	LogPath string
}

// Process is a running server started by StartProcess. It never outlives the program that
// started it: on Linux the kernel kills it when its parent dies, and Stop ends it earlier.
type Process struct {
	spec   ProcessSpec
	cmd    *exec.Cmd
	log    *os.File
	done   chan struct{}
	mu     sync.Mutex
	waitEr error
}

// StartProcess starts spec's binary with stdout and stderr going to spec.LogPath.
func StartProcess(spec ProcessSpec) (*Process, error) {
	if spec.Name == "" {
		spec.Name = filepath.Base(spec.Path)
	}
	if spec.LogPath == "" {
		return nil, fmt.Errorf("start %s: ProcessSpec.LogPath is empty: every process needs a log file", spec.Name)
	}
	if err := os.MkdirAll(filepath.Dir(spec.LogPath), 0o755); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Name, err)
	}
	logFile, err := os.OpenFile(spec.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", spec.Name, err)
	}
	fmt.Fprintf(logFile, "=== %s: %s %s\n", time.Now().Format(time.RFC3339Nano), spec.Path, strings.Join(spec.Args, " "))

	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Dir = spec.Dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s (%s): %w", spec.Name, spec.Path, err)
	}
	p := &Process{spec: spec, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitEr = err
		p.mu.Unlock()
		fmt.Fprintf(logFile, "=== %s: %s exited: %v\n", time.Now().Format(time.RFC3339Nano), spec.Name, exitText(err))
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Name returns the process's name from its spec.
func (p *Process) Name() string { return p.spec.Name }

// LogPath returns the file that holds the process's output.
func (p *Process) LogPath() string { return p.spec.LogPath }

// PID returns the operating system's id of the process.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited and, if so, how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return true, p.waitEr
	default:
		return false, nil
	}
}

// Stop sends SIGTERM, waits up to grace for the process to exit, then kills it. It is safe
// to call more than once and on a process that already exited. The error is nil when the
// process ended, whatever its exit status: a server stopped by a signal is not a failure.
func (p *Process) Stop(grace time.Duration) error {
	if exited, _ := p.Exited(); exited {
		return nil
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("stop %s: %w", p.spec.Name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s after %s: %w", p.spec.Name, grace, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("kill %s: pid %d still running 10s after SIGKILL", p.spec.Name, p.PID())
	}
}

// LogTail returns the last n lines of the process's log, for error messages.
func (p *Process) LogTail(n int) string { return LogTail(p.spec.LogPath, n) }

// LogTail returns the last n lines of the file at path, or a note saying why it can't.
func LogTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log %s: %v)", path, err)
	}
	data = bytes.TrimRight(data, "\n")
	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// logTailLines is how much of a failing component's log an error message carries.
const logTailLines = 30

// ReadyCheck describes an HTTP(S) readiness endpoint for WaitReady.
type ReadyCheck struct {
	// URL is polled with GET until it answers 200.
	URL string
	// TLS configures https URLs: the CA to trust and, if the endpoint needs one, a client
	// certificate. Nil means plain HTTP, or for https skipping verification of a
	// self-signed serving certificate.
	TLS *tls.Config
	// Interval between polls; default 100ms.
	Interval time.Duration
}

// WaitReady polls check.URL until it answers 200 OK. It fails early when p (which may be
// nil) exits, and when ctx ends; either error carries the tail of p's log so that the
// reason shows in the test output.
func WaitReady(ctx context.Context, p *Process, check ReadyCheck) error {
	tlsConfig := check.TLS
	if tlsConfig == nil && strings.HasPrefix(check.URL, "https:") {
		// A readiness probe only asks whether the server answers; trust is checked by the
		// real clients.
		tlsConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // see above
	}
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true},
	}
	interval := check.Interval
	if interval == 0 {
		interval = 100 * time.Millisecond
	}
	name := check.URL
	var exitC <-chan struct{}
	if p != nil {
		name = p.spec.Name
		exitC = p.done
	}
	last := "no answer yet"
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, check.URL, nil)
		if err != nil {
			return fmt.Errorf("%s readiness: %w", name, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
		} else if ctx.Err() == nil {
			// An error caused by ctx ending says nothing about the server: keep the
			// answer before it.
			last = err.Error()
		}
		select {
		case <-exitC:
			_, werr := p.Exited()
			return fmt.Errorf("%s exited before %s was ready (%s); last lines of %s:\n%s",
				name, check.URL, exitText(werr), p.spec.LogPath, p.LogTail(logTailLines))
		case <-ctx.Done():
			tail := ""
			if p != nil {
				tail = fmt.Sprintf("; last lines of %s:\n%s", p.spec.LogPath, p.LogTail(logTailLines))
			}
			return fmt.Errorf("%s not ready at %s: %w; last answer: %s%s", name, check.URL, ctx.Err(), last, tail)
		case <-ticker.C:
		}
	}
}
