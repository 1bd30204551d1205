package harness

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCheckComponents(t *testing.T) {
	tests := []struct {
		name    string
		in      []Component
		want    []Component
		wantErr string
	}{
		{name: "empty means all", in: nil, want: AllComponents},
		{name: "all", in: []Component{ControllerManager, Etcd, APIServer}, want: AllComponents},
		{name: "without controller-manager", in: []Component{Etcd, APIServer}, want: []Component{Etcd, APIServer}},
		{name: "etcd only", in: []Component{Etcd}, want: []Component{Etcd}},
		{name: "gap", in: []Component{Etcd, ControllerManager}, wantErr: "Options.Components: kube-controller-manager needs kube-apiserver; add it"},
		{name: "unknown", in: []Component{"kube-scheduler"}, wantErr: `Options.Components: unknown component "kube-scheduler"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkComponents(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestFindBinariesSaysHowToBuildThem(t *testing.T) {
	dir := t.TempDir()
	_, err := findBinaries(Options{Components: AllComponents, ToolsBin: dir})
	want := "kube-apiserver not found in " + dir + ": run `make tools`"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want %q", err, want)
	}
	_, err = findBinaries(Options{Components: AllComponents, EtcdPath: filepath.Join(dir, "etcd")})
	if err == nil || !strings.Contains(err.Error(), "Options.EtcdPath") {
		t.Fatalf("err = %v, want it to name Options.EtcdPath", err)
	}
}

func TestSanitizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{in: "TestSmoke", want: "TestSmoke"},
		{in: "TestPolicy/kata_for_tenant-a", want: filepath.Join("TestPolicy", "kata_for_tenant-a")},
		{in: `TestX/"quoted" name`, want: filepath.Join("TestX", "_quoted__name")},
		{in: "../../etc", want: "etc"},
		{in: "/", want: "_"},
	}
	for _, tt := range tests {
		if got := sanitizeName(tt.in); got != tt.want {
			t.Errorf("sanitizeName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestCopyDir(t *testing.T) {
	src := t.TempDir()
	files := map[string]string{"etcd.log": "e", "kube-apiserver.log": "a", filepath.Join("webhook", "isolator.log"): "w"}
	for name, data := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dest := filepath.Join(t.TempDir(), "artifacts", "TestX")
	if err := copyDir(src, dest); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if got := string(readFile(t, filepath.Join(dest, name))); got != data {
			t.Errorf("%s = %q, want %q", name, got, data)
		}
	}
}

type recordingLogger struct{ lines []string }

func (r *recordingLogger) Logf(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

func TestSaveArtifacts(t *testing.T) {
	artifacts := t.TempDir()
	t.Setenv("ISOLATOR_E2E_ARTIFACTS", artifacts)
	cp := &ControlPlane{logDir: t.TempDir()}
	if err := os.WriteFile(cp.LogPath(APIServer), []byte("apiserver log"), 0o644); err != nil {
		t.Fatal(err)
	}
	var l recordingLogger
	saveArtifacts(&l, cp, "TestWebhook/tenant a")

	want := filepath.Join(artifacts, "TestWebhook", "tenant_a")
	if got := string(readFile(t, filepath.Join(want, "kube-apiserver.log"))); got != "apiserver log" {
		t.Errorf("saved log = %q", got)
	}
	if len(l.lines) != 1 || l.lines[0] != "control plane logs saved in "+want {
		t.Errorf("messages = %q, want one saying where the logs are", l.lines)
	}
}

func TestArtifactsDirIsInTheSourceTree(t *testing.T) {
	t.Setenv("ISOLATOR_E2E_ARTIFACTS", "")
	dir := ArtifactsDir()
	if !strings.HasSuffix(dir, filepath.Join("e2e", "_artifacts")) {
		t.Fatalf("ArtifactsDir = %s, want <module root>/e2e/_artifacts", dir)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(dir)), "go.mod")); err != nil {
		t.Errorf("%s is not under the module root: %v", dir, err)
	}
}

func TestSweepStaleTempDirs(t *testing.T) {
	parent := t.TempDir()
	// A pid above the kernel's maximum (4194304) never belongs to a live process.
	dead := filepath.Join(parent, tempPrefix+"99999999-etcd-123")
	alive := filepath.Join(parent, fmt.Sprintf("%s%d-work-456", tempPrefix, os.Getpid()))
	foreign := filepath.Join(parent, "isolator-e2e-99999999")
	for _, dir := range []string{dead, alive, foreign} {
		if err := os.MkdirAll(filepath.Join(dir, "member"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fresh, err := makeTempDir(parent, "etcd")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{dead: false, alive: true, foreign: true, fresh: true}
	for dir, exists := range want {
		_, err := os.Stat(dir)
		if got := err == nil; got != exists {
			t.Errorf("%s exists = %v, want %v", filepath.Base(dir), got, exists)
		}
	}
	if !strings.HasPrefix(filepath.Base(fresh), fmt.Sprintf("%s%d-etcd-", tempPrefix, os.Getpid())) {
		t.Errorf("new directory %s is not named after this process", fresh)
	}
}

func TestFreePorts(t *testing.T) {
	ports, err := FreePorts(8)
	if err != nil {
		t.Fatal(err)
	}
	low, high := portRangeBelowEphemeral()
	seen := map[int]bool{}
	for _, p := range ports {
		if seen[p] {
			t.Errorf("port %d handed out twice in %v", p, ports)
		}
		seen[p] = true
		if high > low && (p < low || p >= high) {
			t.Errorf("port %d outside [%d, %d), below the kernel's ephemeral range", p, low, high)
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d is not free: %v", p, err)
			continue
		}
		_ = l.Close()
	}
}
