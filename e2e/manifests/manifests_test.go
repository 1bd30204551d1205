//go:build e2e

// Package manifests checks isolator's deployable package against a real apiserver:
// every kustomization is accepted by a server-side dry run (with the cert-manager and
// prometheus-operator CRDs installed), the generated backstop refuses pods that need a
// sandbox while no webhook runs, and the exemption-label policy keeps tenants from
// relabelling their namespaces.
package manifests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// Versions of the modules whose CRDs the manifests use.
const (
	certManagerModule        = "github.com/cert-manager/cert-manager@v1.21.2"
	prometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
)

var cp *harness.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Options{}, &cp, installCRDs))
}

// moduleDir downloads a module with the go command (from the module cache when it is
// there) and returns its directory.
func moduleDir(ctx context.Context, module string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module)
	// Outside isolator's module, so that go.mod is neither read nor changed.
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	var info struct{ Dir, Error string }
	if err := json.Unmarshal(out, &info); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	if info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", module, info.Error)
	}
	return info.Dir, nil
}

// installCRDs installs the cert-manager and prometheus-operator CRDs, as a cluster that
// runs them has, and waits until they are served.
func installCRDs(ctx context.Context, cp *harness.ControlPlane) error {
	for _, src := range []struct{ module, dir string }{
		{certManagerModule, "deploy/crds"},
		{prometheusOperatorModule, "example/prometheus-operator-crd"},
	} {
		dir, err := moduleDir(ctx, src.module)
		if err != nil {
			return err
		}
		if _, err := cp.Kubectl(ctx, nil, "apply", "--server-side", "-f", filepath.Join(dir, src.dir)); err != nil {
			return err
		}
	}
	_, err := cp.Kubectl(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
	return err
}

func manifestsDir(t *testing.T) string {
	t.Helper()
	dir, err := harness.ManifestsDir()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestEveryKustomizationIsAccepted applies every kustomization with a server-side dry
// run: the apiserver validates every object, the custom resources against their CRDs'
// schemas, and the CEL of the admission policies.
func TestEveryKustomizationIsAccepted(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := context.Background()
	// Namespaced objects need their namespace to exist for a dry run.
	if _, err := cp.CreateNamespace(ctx, harness.IsolatorNamespace, nil); err != nil {
		t.Fatal(err)
	}
	root := manifestsDir(t)
	for _, dir := range []string{".", "base", "runtimeclasses", "node", "monitoring", "overlays/cert-manager", "overlays/self-signed"} {
		t.Run(dir, func(t *testing.T) {
			path := filepath.Join(root, dir)
			built, err := cp.Kubectl(ctx, nil, "kustomize", path)
			if err != nil {
				t.Fatal(err)
			}
			want := strings.Count("\n"+built, "\nkind: ")
			out, err := cp.Kubectl(ctx, nil, "apply", "--server-side", "--dry-run=server", "-k", path)
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Count(out, "serverside-applied (server dry run)"); got != want || want == 0 {
				t.Errorf("%d of %d objects applied:\n%s", got, want, out)
			}
		})
	}
}

// mustApply applies files or kustomizations for real.
func mustApply(t *testing.T, args ...string) {
	t.Helper()
	if _, err := cp.Kubectl(context.Background(), nil, append([]string{"apply", "--server-side"}, args...)...); err != nil {
		t.Fatal(err)
	}
	// Each test leaves the shared control plane as it found it: the Helm test installs
	// these objects as its release, which it can't do over objects left here.
	t.Cleanup(func() {
		if _, err := cp.Kubectl(context.Background(), nil, append([]string{"delete", "--ignore-not-found", "--wait=false"}, args...)...); err != nil {
			t.Errorf("removing what the test applied: %v", err)
		}
	})
}

// eventually polls check until it returns nil, for policies that the apiserver picks up
// from its informer after a short delay.
func eventually(t *testing.T, what string, check func(context.Context) error) {
	t.Helper()
	var last error
	err := harness.WaitFor(context.Background(), 30*time.Second, what, func(ctx context.Context) (bool, error) {
		last = check(ctx)
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("%v: %v", err, last)
	}
}

func testPod(name, image, class string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
	if class != "" {
		p.Spec.RuntimeClassName = &class
	}
	return p
}

// create makes a dry-run pod CREATE: admission runs in full, nothing is stored.
func create(ctx context.Context, c kubernetes.Interface, ns string, p *corev1.Pod) error {
	_, err := c.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}
