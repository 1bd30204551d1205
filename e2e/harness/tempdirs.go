package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Temporary directories carry the id of the process that made them, so that the next start
// can remove those of test binaries that died without cleaning up (a timeout panic or
// SIGKILL skips every cleanup; the kernel kills the servers, but their files stay, and
// etcd's sit in memory under /dev/shm).
const tempPrefix = "isolator-e2e-pid"

// makeTempDir creates a fresh directory in parent named after this process.
func makeTempDir(parent, kind string) (string, error) {
	sweepStaleTempDirs(parent)
	return os.MkdirTemp(parent, fmt.Sprintf("%s%d-%s-", tempPrefix, os.Getpid(), kind))
}

// sweepStaleTempDirs removes the directories in parent made by processes that no longer
// exist. It only ever looks at names it made itself, and leaves a directory alone when
// in doubt.
func sweepStaleTempDirs(parent string) {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), tempPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if !ok || err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		_ = os.RemoveAll(filepath.Join(parent, e.Name()))
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	// EPERM: it exists but belongs to someone else.
	return err == nil || errors.Is(err, syscall.EPERM)
}
