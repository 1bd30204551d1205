package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// assertGolden compares got with the golden file; UPDATE_GOLDEN=1 rewrites it.
func assertGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs (UPDATE_GOLDEN=1 refreshes it):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// checkStaleGoldens fails for a golden file whose input is gone.
func checkStaleGoldens(t *testing.T, dir string, inputs []string) {
	t.Helper()
	have := map[string]bool{}
	for _, in := range inputs {
		have[strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))] = true
	}
	goldens, _ := filepath.Glob(filepath.Join(dir, "*.golden"))
	for _, g := range goldens {
		name := strings.TrimSuffix(filepath.Base(g), ".golden")
		if !have[name] {
			if os.Getenv("UPDATE_GOLDEN") == "1" {
				_ = os.Remove(g)
				continue
			}
			t.Errorf("stale golden %s has no input; delete it or run with UPDATE_GOLDEN=1", g)
		}
	}
}

func prettyJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	out.WriteByte('\n')
	return out.Bytes()
}
