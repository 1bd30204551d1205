// Package docs holds no Go code: its tests keep the documentation true to the code.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// testRef is a test named on a page as `<package>.<Test>`, e.g. `e2e/bypass.TestWebhookDown`.
var testRef = regexp.MustCompile("`([a-z0-9/]+)\\.((?:Test|Fuzz|Benchmark|Example)[A-Za-z0-9_]*)`")

// TestSecurityTestsExist: every test docs/security.md names exists in the package it
// names, and is marked e2e (real servers) exactly when it lives under e2e/.
func TestSecurityTestsExist(t *testing.T) {
	data, err := os.ReadFile("security.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for _, group := range strings.Split(cells[len(cells)-1], ";") {
			where, list, ok := strings.Cut(strings.TrimSpace(group), ":")
			refs := testRef.FindAllStringSubmatch(list, -1)
			if !ok || len(refs) == 0 {
				if len(testRef.FindAllString(group, -1)) > 0 {
					t.Errorf("security.md:%d: %q names tests without saying where they run (e2e: or in-process:)", i+1, group)
				}
				continue
			}
			for _, ref := range refs {
				pkg, name := ref[1], ref[2]
				n++
				if e2e := strings.HasPrefix(pkg, "e2e/"); e2e != (where == "e2e") {
					t.Errorf("security.md:%d: %s.%s is marked %q, but it runs %s", i+1, pkg, name, where, map[bool]string{true: "against real servers (e2e)", false: "in-process"}[e2e])
				}
				if !defines(t, filepath.Join("..", pkg), name) {
					t.Errorf("security.md:%d: no func %s in %s/*_test.go", i+1, name, pkg)
				}
			}
		}
	}
	if n < 40 {
		t.Errorf("found only %d test references in security.md: the format changed?", n)
	}
	t.Logf("%d test references checked", n)
}

func defines(t *testing.T, dir, name string) bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), "\nfunc "+name+"(") {
			return true
		}
	}
	return false
}

// TestArchitectureListsEveryPackage: docs/architecture.md has a row for every Go
// package of the module, so a new package can't land undocumented, and no row for a
// package that is gone.
func TestArchitectureListsEveryPackage(t *testing.T) {
	data, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9/-]+)/` \\|").FindAllStringSubmatch(string(data), -1) {
		documented[m[1]] = true
	}
	packages := map[string]bool{}
	err = filepath.WalkDir("..", func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch name := d.Name(); {
			case p != ".." && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata"):
				return filepath.SkipDir
			case p != ".." && fileExists(filepath.Join(p, "go.mod")):
				return filepath.SkipDir // a separate module (e2e/tools)
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") {
			dir, _ := filepath.Rel("..", filepath.Dir(p))
			packages[filepath.ToSlash(dir)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	delete(packages, ".")
	for p := range packages {
		if !documented[p] {
			t.Errorf("package %s/ has no row in docs/architecture.md", p)
		}
	}
	for p := range documented {
		if !packages[p] {
			t.Errorf("docs/architecture.md has a row for %s/, which is no package", p)
		}
	}
	if len(packages) < 30 {
		t.Errorf("found only %d packages", len(packages))
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
