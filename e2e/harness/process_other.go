//go:build !linux

package harness

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; Stop and the test cleanups are
// then the only guard against leftover processes.
func sysProcAttr() *syscall.SysProcAttr { return nil }
