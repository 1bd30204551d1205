//go:build e2e

package bypass

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// 4. The webhook is down (it fails open, so pod creation never stalls on it). The
// backstop, a ValidatingAdmissionPolicy generated from the policy, still refuses every
// pod the policy sends to a sandbox unless it names an accepted class; everything else
// is admitted. This test runs last in the package: it stops the webhook.
func TestWebhookDown(t *testing.T) {
	ctx := testContext(t)
	if err := iso.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	err := harness.WaitFor(ctx, 30*time.Second, "pods to reach the backstop without the webhook", func(ctx context.Context) (bool, error) {
		_, lastErr = cp.Client().CoreV1().Pods("shop").Create(ctx, pod("shop", "while-down", "registry.example.com/shop/web:1"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return lastErr != nil, nil
	})
	if err != nil {
		t.Fatalf("with the webhook down, a pod in a sandboxed namespace was admitted without kata-rc: %v", err)
	}
	sandboxedOrDenied(t, "no class, webhook down", nil, lastErr, "", "kata-rc", "untrusted-namespaces")

	for _, c := range []struct {
		what, ns, image, class string
		denied                 bool
	}{
		{"hub image in a trusted namespace", "payments", "nginx", "", true},
		{"runc-rc in a sandboxed namespace", "shop", "registry.example.com/shop/web:1", "runc-rc", true},
		{"kata-rc named by the pod", "shop", "registry.example.com/shop/web:1", "kata-rc", false},
		{"a platform pod in a trusted namespace", "payments", "registry.example.com/platform/ledger:2", "", false},
		{"kube-system", "kube-system", "nginx", "", false},
	} {
		p := pod(c.ns, "", c.image)
		if c.class != "" {
			p.Spec.RuntimeClassName = ptr(c.class)
		}
		seq++
		p.Name = "down-" + time.Now().Format("150405.000000")[7:]
		_, err := cp.Client().CoreV1().Pods(c.ns).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		switch {
		case c.denied && err == nil:
			t.Errorf("%s: admitted while the webhook is down", c.what)
		case !c.denied && err != nil:
			t.Errorf("%s: refused while the webhook is down; an outage must not block it: %v", c.what, err)
		}
	}
}
