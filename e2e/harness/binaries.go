package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ToolsBin returns the directory `make tools` builds the test tools into:
// $ISOLATOR_TOOLS_BIN, else ~/.cache/isolator/bin.
func ToolsBin() string {
	if dir := os.Getenv("ISOLATOR_TOOLS_BIN"); dir != "" {
		return dir
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".cache", "isolator", "bin")
	}
	return filepath.Join(os.TempDir(), "isolator", "bin")
}

// Tool returns the path of the test tool name (kubectl, kube-apiserver, ...) in ToolsBin,
// or an error that says how to build it.
func Tool(name string) (string, error) { return toolIn(ToolsBin(), name) }

func toolIn(dir, name string) (string, error) {
	path := filepath.Join(dir, name)
	info, err := os.Stat(path)
	if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s not found in %s: run `make tools` (or set ISOLATOR_TOOLS_BIN to where it is)", name, dir)
	}
	return path, nil
}

// findBinaries resolves the binary of every component in opts.Components before anything
// starts, so that a missing tool fails at once with what to do about it.
func findBinaries(opts Options) (map[Component]string, error) {
	dir := opts.ToolsBin
	if dir == "" {
		dir = ToolsBin()
	}
	bins := map[Component]string{}
	for _, c := range opts.Components {
		if c == Etcd {
			path, err := findEtcd(opts.EtcdPath)
			if err != nil {
				return nil, err
			}
			bins[c] = path
			continue
		}
		path, err := toolIn(dir, string(c))
		if err != nil {
			return nil, err
		}
		bins[c] = path
	}
	return bins, nil
}

func findEtcd(path string) (string, error) {
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("Options.EtcdPath: %w", err)
		}
		return path, nil
	}
	if path, err := exec.LookPath("etcd"); err == nil {
		return path, nil
	}
	if path, err := toolIn("/usr/bin", "etcd"); err == nil {
		return path, nil
	}
	return "", fmt.Errorf("etcd not found on PATH nor at /usr/bin/etcd: install it with `apt-get install etcd-server`")
}
