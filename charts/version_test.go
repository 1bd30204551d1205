package charts

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersionsAgree: a release has one version. The chart's appVersion is it; the
// chart's version is the same without the v; the newest CHANGELOG entry names it; the
// Makefile stamps the same VERSION into the binary (`isolator version`) and tags the
// images with it; and a commit tagged v* is tagged with exactly it.
func TestVersionsAgree(t *testing.T) {
	var c struct {
		Version    string `json:"version"`
		AppVersion string `json:"appVersion"`
	}
	if err := readYAML(filepath.Join(Dir(), "Chart.yaml"), &c); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(c.AppVersion) {
		t.Fatalf("Chart.yaml appVersion %q: want vMAJOR.MINOR.PATCH", c.AppVersion)
	}
	if c.Version != strings.TrimPrefix(c.AppVersion, "v") {
		t.Errorf("Chart.yaml version %q and appVersion %q disagree", c.Version, c.AppVersion)
	}

	changelog, err := os.ReadFile(filepath.Join("..", "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## (v\d+\.\d+\.\d+)\b`).FindSubmatch(changelog)
	if m == nil || string(m[1]) != c.AppVersion {
		t.Errorf("the newest CHANGELOG.md entry is %q, want %s", m, c.AppVersion)
	}

	makefile, err := os.ReadFile(filepath.Join("..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"internal/version.Version=$(VERSION)",     // isolator version
		"IMAGE_TAG    ?= $(VERSION)",              // the images' tag
		"--build-arg VERSION=$(VERSION)",          // the binaries inside the images
		"VERSION  ?= $(shell git describe --tags", // a tagged commit builds as its tag
	} {
		if !strings.Contains(string(makefile), want) {
			t.Errorf("the Makefile no longer has %q: binary, images and chart may disagree", want)
		}
	}

	out, err := exec.Command("git", "describe", "--tags", "--exact-match", "--match", "v*", "HEAD").Output()
	if err != nil {
		t.Logf("HEAD carries no release tag; the tag check applies to tagged commits")
		return
	}
	if tag := strings.TrimSpace(string(out)); tag != c.AppVersion {
		t.Errorf("HEAD is tagged %s, but the chart's appVersion is %s", tag, c.AppVersion)
	}
}
