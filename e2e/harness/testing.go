package harness

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// StartForTest starts a control plane for one test and registers its cleanup: every
// process is stopped and the work directory removed when the test ends, and if the test
// failed the component logs are first copied to e2e/_artifacts/<TestName>/. A start
// failure fails the test at once, with the failing component's log tail.
//
// Startup takes several seconds; suites share one control plane per package through
// RunTests instead (see the package documentation).
func StartForTest(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startBudget(opts))
	defer cancel()
	cp, err := start(ctx, opts)
	if err != nil {
		if cp != nil {
			saveArtifacts(t, cp, t.Name())
			cp.removeWorkDir()
		}
		t.Fatalf("start control plane: %v", err)
	}
	t.Cleanup(func() {
		if err := cp.stopProcesses(); err != nil {
			t.Errorf("stop control plane: %v", err)
		}
		if t.Failed() {
			saveArtifacts(t, cp, t.Name())
		}
		cp.removeWorkDir()
	})
	return cp
}

// startBudget bounds a whole start: every component may take the full StartTimeout.
func startBudget(opts Options) time.Duration {
	per := opts.StartTimeout
	if per == 0 {
		per = defaultStartTimeout
	}
	return time.Duration(len(AllComponents)+1) * per
}

// RunTests runs a package's tests against one shared control plane and returns the exit
// code for os.Exit. It starts the control plane, stores it in *cp for the tests, runs
// them, and stops it. When a test failed, the component logs are copied to
// e2e/_artifacts/<package directory>/.
//
// Each setup function runs once after the start, before the tests (e.g. to start and
// register the webhook); a setup error fails the package with the logs saved.
func RunTests(m *testing.M, opts Options, cp **ControlPlane, setup ...func(context.Context, *ControlPlane) error) int {
	ctx, cancel := context.WithTimeout(context.Background(), startBudget(opts))
	started, err := start(ctx, opts)
	for _, fn := range setup {
		if err != nil {
			break
		}
		if err = fn(ctx, started); err != nil {
			err = fmt.Errorf("setup: %w", err)
			_ = started.stopProcesses()
		}
	}
	cancel()
	name := packageArtifactName()
	if err != nil {
		fmt.Fprintf(os.Stderr, "start control plane: %v\n", err)
		if started != nil {
			saveArtifacts(stderrLogger{}, started, name)
			started.removeWorkDir()
		}
		return 1
	}
	*cp = started
	code := m.Run()
	if err := started.stopProcesses(); err != nil {
		fmt.Fprintf(os.Stderr, "stop control plane: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	if code != 0 {
		saveArtifacts(stderrLogger{}, started, name)
	}
	started.removeWorkDir()
	return code
}

// SaveLogsOnFailure makes a test that uses a shared control plane copy the component logs,
// as they are when the test ends, to e2e/_artifacts/<TestName>/ if it failed.
func (cp *ControlPlane) SaveLogsOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			saveArtifacts(t, cp, t.Name())
		}
	})
}

// StartProcessForTest starts spec with StartProcess and stops it when the test ends. If
// the test failed, the end of its log is printed with the test's output.
func StartProcessForTest(t testing.TB, spec ProcessSpec) *Process {
	t.Helper()
	p, err := StartProcess(spec)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := p.Stop(DefaultStopGrace); err != nil {
			t.Errorf("%v", err)
		}
		if t.Failed() {
			t.Logf("last lines of %s:\n%s", p.LogPath(), p.LogTail(logTailLines))
		}
	})
	return p
}

type logger interface {
	Logf(format string, args ...any)
}

type stderrLogger struct{}

func (stderrLogger) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// saveArtifacts copies everything in cp's log directory to the artifacts directory for
// name and says where it went.
func saveArtifacts(l logger, cp *ControlPlane, name string) {
	dest := filepath.Join(ArtifactsDir(), sanitizeName(name))
	if err := copyDir(cp.logDir, dest); err != nil {
		l.Logf("could not save the control plane logs from %s to %s: %v", cp.logDir, dest, err)
		return
	}
	l.Logf("control plane logs saved in %s", dest)
}

// ArtifactsDir is where failed tests leave their logs: $ISOLATOR_E2E_ARTIFACTS, else
// e2e/_artifacts in the isolator source tree the test runs in (git ignores it).
func ArtifactsDir() string {
	if dir := os.Getenv("ISOLATOR_E2E_ARTIFACTS"); dir != "" {
		return dir
	}
	if root, ok := moduleRoot(); ok {
		return filepath.Join(root, "e2e", "_artifacts")
	}
	return filepath.Join(os.TempDir(), "isolator-e2e-artifacts")
}

// moduleRoot finds the isolator module's root above the working directory; go test runs
// tests in their package's directory.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/isolator-dev/isolator\n") {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func packageArtifactName() string {
	dir, err := os.Getwd()
	if err != nil {
		return "TestMain"
	}
	return filepath.Base(dir)
}

// sanitizeName turns a test name (subtests have slashes, table entries spaces and
// quotes) into a path that stays inside the artifacts directory; subtests become
// subdirectories.
func sanitizeName(name string) string {
	mapped := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.', r == '/':
			return r
		default:
			return '_'
		}
	}, name)
	var parts []string
	for _, part := range strings.Split(mapped, "/") {
		if part != "" && part != "." && part != ".." {
			parts = append(parts, part)
		}
	}
	if len(parts) == 0 {
		return "_"
	}
	return filepath.Join(parts...)
}

func copyDir(src, dest string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dest, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return copyFile(path, target)
	})
}

func copyFile(src, dest string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	out, err := os.Create(dest)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
