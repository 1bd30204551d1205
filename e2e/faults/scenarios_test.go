//go:build e2e

package faults

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// A policy ConfigMap is deleted: its rules go, and nothing else changes.
func TestPolicyConfigMapDeleted(t *testing.T) {
	ctx := testContext(t)
	runner := pod("payments", "runner", "registry.example.com/platform/runner:3", map[string]string{"app": "ci-runner"})
	before := map[string]string{
		"runner":   dryRunClass(ctx, cp, runner),
		"shop":     dryRunClass(ctx, cp, pod("shop", "web", "registry.example.com/shop/web:1", nil)),
		"platform": dryRunClass(ctx, cp, pod("payments", "ledger", "registry.example.com/platform/ledger:2", nil)),
		"hub":      dryRunClass(ctx, cp, pod("payments", "cache", "redis:7", nil)),
	}
	if before["runner"] != "kata-rc" {
		t.Fatalf("setup: a CI runner gets %q, want kata-rc from ci/ci-runners", before["runner"])
	}
	if err := cp.Client().CoreV1().ConfigMaps(harness.IsolatorNamespace).Delete(ctx, "ci", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if err := cp.Apply(ctx, "examples/policies.yaml"); err != nil {
			t.Error(err)
		}
		if err := waitFor(ctx, cp, "the ci policy to return", func(ctx context.Context) bool { return backstopRules(ctx, cp) == "5" }); err != nil {
			t.Error(err)
		}
	})
	// The webhook drops the rules at once; the backstop follows through the apiserver's
	// informer, so wait for both.
	if err := waitFor(ctx, cp, "the ci rules to go", func(ctx context.Context) bool {
		return dryRunClass(ctx, cp, runner) == "runc-rc" && backstopRules(ctx, cp) == "4"
	}); err != nil {
		t.Fatal(err)
	}
	for what, want := range map[string]string{"shop": before["shop"], "platform": before["platform"], "hub": before["hub"]} {
		var got string
		switch what {
		case "shop":
			got = dryRunClass(ctx, cp, pod("shop", "web", "registry.example.com/shop/web:1", nil))
		case "platform":
			got = dryRunClass(ctx, cp, pod("payments", "ledger", "registry.example.com/platform/ledger:2", nil))
		case "hub":
			got = dryRunClass(ctx, cp, pod("payments", "cache", "redis:7", nil))
		}
		if got != want {
			t.Errorf("%s pods changed from %q to %q when an unrelated ConfigMap was deleted", what, want, got)
		}
	}
}

// The kube-apiserver restarts while the webhook runs: the informers recover and the
// policy stays in force, and a policy change after the restart still takes effect.
func TestAPIServerRestart(t *testing.T) {
	ctx := testContext(t)
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitFor(ctx, cp, "admissions after the restart", func(ctx context.Context) bool {
		return dryRunClass(ctx, cp, pod("shop", "web", "registry.example.com/shop/web:1", nil)) == "kata-rc"
	}); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		got, err := cp.Client().CoreV1().Pods("shop").Create(ctx, pod("shop", "after-restart-"+string(rune('a'+i)), "registry.example.com/shop/web:1", nil), metav1.CreateOptions{})
		if err != nil || className(got) != "kata-rc" {
			t.Errorf("after the apiserver restart: %v, class %q", err, className(got))
		}
	}
	// The ConfigMap informer must have re-established its watch: a new rule applies.
	extra := `apiVersion: v1
kind: ConfigMap
metadata:
  name: after-restart
  namespace: isolator-system
  labels: {isolator.dev/policy: "true"}
data:
  policy.yaml: |
    apiVersion: isolator.dev/v1alpha1
    kind: RuntimePolicy
    spec:
      runtimeClasses: [{name: kata-rc, sandboxed: true}]
      rules:
      - name: quay
        runtimeClass: kata-rc
        priority: 500
        match: {anyImage: ["quay.io/**"]}
`
	path := filepath.Join(t.TempDir(), "cm.yaml")
	if err := os.WriteFile(path, []byte(extra), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Kubectl(ctx, nil, "apply", "-f", path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client().CoreV1().ConfigMaps(harness.IsolatorNamespace).Delete(context.Background(), "after-restart", metav1.DeleteOptions{})
	})
	if err := waitFor(ctx, cp, "a policy change after the restart", func(ctx context.Context) bool {
		return dryRunClass(ctx, cp, pod("payments", "q", "quay.io/acme/tool:1", nil)) == "kata-rc"
	}); err != nil {
		t.Error(err)
	}
}

// A rolling restart of the webhook under continuous pod creation: a new replica comes
// up and gets ready before the old one receives SIGTERM, twice over. No admission is
// lost and no pod gets the wrong class.
func TestRollingRestartUnderLoad(t *testing.T) {
	ctx := testContext(t)
	var l load
	stop := make(chan struct{})
	wg := l.run(ctx, t, 4, "roll", stop)
	time.Sleep(2 * time.Second)
	old := first
	for _, name := range []string{"isolator-b", "isolator-c"} {
		next, err := startReplica(ctx, cp, name)
		if err != nil {
			close(stop)
			wg.Wait()
			t.Fatal(err)
		}
		// Let the balancer see the new replica ready, then retire the old one the way
		// the kubelet does: SIGTERM, and SIGKILL after the grace period.
		time.Sleep(500 * time.Millisecond)
		if err := old.Stop(15 * time.Second); err != nil {
			t.Errorf("stopping %s: %v", old.Name(), err)
		}
		bal.Remove(old)
		time.Sleep(2 * time.Second)
		old = next
	}
	close(stop)
	wg.Wait()
	l.report(t, "rolling restart")
	t.Logf("the balancer accepted %d connections", bal.Connections.Load())
}
