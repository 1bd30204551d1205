package atomicfile

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	cases := []struct {
		name     string
		existing []byte // nil: no file before
		mode     os.FileMode
		data     []byte
		wantMode os.FileMode
	}{
		{name: "new file gets perm", data: []byte("a = 1\n"), mode: 0o600, wantMode: 0o600},
		{name: "existing file keeps its mode", existing: []byte("old"), mode: 0o640, data: []byte("new"), wantMode: 0o640},
		{name: "empty content", existing: []byte("old"), mode: 0o644, data: []byte{}, wantMode: 0o644},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "sub", "config.toml")
			if c.existing != nil {
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, c.existing, c.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, c.mode); err != nil {
					t.Fatal(err)
				}
			}
			if err := WriteFile(p, c.data, c.mode); err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, c.data) {
				t.Fatalf("content = %q, %v; want %q", got, err, c.data)
			}
			st, _ := os.Stat(p)
			if st.Mode().Perm() != c.wantMode {
				t.Errorf("mode = %v, want %v", st.Mode().Perm(), c.wantMode)
			}
			entries, _ := os.ReadDir(filepath.Dir(p))
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the file (no temp files left)", len(entries))
			}
		})
	}
}

func TestSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "kata")
	for _, target := range []string{"v1", "v2"} {
		if err := Symlink(target, link); err != nil {
			t.Fatal(err)
		}
		got, err := os.Readlink(link)
		if err != nil || got != target {
			t.Fatalf("link -> %q, %v; want %q", got, err, target)
		}
	}
}

func TestRemoveMissing(t *testing.T) {
	if err := Remove(filepath.Join(t.TempDir(), "nope")); err != nil {
		t.Fatalf("Remove of a missing file: %v", err)
	}
}
