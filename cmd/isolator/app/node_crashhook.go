//go:build crashhook && !webhookonly

package app

import (
	"os"
	"syscall"
)

// crashAtEnv names a step at which the process kills itself with SIGKILL, exactly as
// kill -9 would. It exists for the crash tests of e2e/node, which check that a rerun
// converges; only a binary built with -tags crashhook has it.
const crashAtEnv = "ISOLATOR_NODE_CRASH_AT"

// crashHook returns the AtStep hook for ISOLATOR_NODE_CRASH_AT.
func crashHook() func(string) {
	step := os.Getenv(crashAtEnv)
	if step == "" {
		return nil
	}
	return func(s string) {
		if s == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // SIGKILL cannot be caught; wait for it to land
		}
	}
}
