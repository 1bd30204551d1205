//go:build e2e

package controlplane

import (
	"os/exec"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// TestKubectl checks the kubectl that `make tools` builds, the way the manifest suites use
// it: with the admin kubeconfig, kustomize (-k), server-side apply and a server dry run,
// which must leave nothing behind; and then for real.
func TestKubectl(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t)
	ns := createNamespace(t, ctx, "smoke-kubectl")
	kubectl, err := harness.Tool("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", cp.Kubeconfig()}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}

	if out := run("version"); !strings.Contains(out, "Client Version: v1.37.2") || !strings.Contains(out, "Server Version: v1.37.2") {
		t.Errorf("kubectl version:\n%s\nwant client and server v1.37.2", out)
	}

	out := run("apply", "--server-side", "--dry-run=server", "-k", "testdata/kustomize")
	if want := "configmap/kustomized serverside-applied (server dry run)"; !strings.Contains(out, want) {
		t.Errorf("dry run output:\n%s\nwant %q", out, want)
	}
	if _, err := cp.Client().CoreV1().ConfigMaps(ns).Get(ctx, "kustomized", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the dry run stored the ConfigMap: err = %v, want NotFound", err)
	}

	run("apply", "--server-side", "-k", "testdata/kustomize")
	cm, err := cp.Client().CoreV1().ConfigMaps(ns).Get(ctx, "kustomized", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["greeting"] != "hello" || cm.Labels["app.kubernetes.io/part-of"] != "isolator-smoke" {
		t.Errorf("applied ConfigMap data = %v, labels = %v; want the kustomization's", cm.Data, cm.Labels)
	}
}
