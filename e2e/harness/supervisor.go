package harness

import (
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Supervisor runs a command and starts it again whenever it exits, as a systemd unit
// with Restart=always does. It stands for containerd.service on a test node: isolator
// restarts containerd with --restart=signal, which is what it does under any such
// supervisor.
type Supervisor struct {
	newCmd func() *exec.Cmd
	log    *os.File
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once

	mu     sync.Mutex
	cmd    *exec.Cmd
	starts int
}

// Supervise starts the first command from newCmd and returns; each time it exits,
// newCmd makes the next one. Their output goes to logPath (appended).
func Supervise(logPath string, newCmd func() *exec.Cmd) (*Supervisor, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	s := &Supervisor{newCmd: newCmd, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	go s.loop()
	return s, nil
}

func (s *Supervisor) loop() {
	defer close(s.done)
	defer s.log.Close()
	for {
		cmd := s.newCmd()
		cmd.Stdout, cmd.Stderr = s.log, s.log
		cmd.SysProcAttr = sysProcAttr()
		s.mu.Lock()
		select {
		case <-s.stop:
			s.mu.Unlock()
			return
		default:
		}
		if err := cmd.Start(); err != nil {
			s.mu.Unlock()
			return
		}
		s.cmd = cmd
		s.starts++
		s.mu.Unlock()
		_ = cmd.Wait()
		select {
		case <-s.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Restart stops the running command; the supervisor starts the next one.
func (s *Supervisor) Restart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
	}
}

// Starts returns how many times a command was started.
func (s *Supervisor) Starts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// Stop ends the running command (SIGTERM, then SIGKILL after 15 s) and starts no more.
// It may be called more than once.
func (s *Supervisor) Stop() {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.stop)
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGTERM)
		}
		s.mu.Unlock()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			s.mu.Lock()
			if s.cmd != nil && s.cmd.Process != nil {
				_ = s.cmd.Process.Kill()
			}
			s.mu.Unlock()
			<-s.done
		}
	})
}
