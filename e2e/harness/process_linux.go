package harness

import "syscall"

// sysProcAttr makes the kernel kill a started server when the test binary dies, even by
// SIGKILL or a panic that skips every cleanup, so that no etcd or apiserver outlives it.
// Pdeathsig fires when the thread that started the child exits; Go only ends threads whose
// goroutine locked them and returned, which this package never does.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
