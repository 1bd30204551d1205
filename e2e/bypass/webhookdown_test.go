//go:build e2e

package bypass

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// 4. The webhook is down (it fails open, so pod creation never stalls on it). The
// backstop, a ValidatingAdmissionPolicy generated from the policy, still refuses every
// pod the policy sends to a sandbox unless it names an accepted class, and every image
// update that needs a sandbox the pod lacks; everything else is admitted. This test runs
// last in the package: it takes the webhook away.
//
// The outage is not a racing stop: both webhook configurations are pointed at a port
// where nothing listens. A probe that the policy leaves to runc shows when the apiserver
// uses them (the webhook would set runc-rc; failing open, the pod keeps no class), and
// from then on every attempt must end exactly as stated, from the first one.
func TestWebhookDown(t *testing.T) {
	ctx := testContext(t)
	runc, _ := runningPods(t, ctx, "down")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := harness.RegisterWebhooks(ctx, cp.Client(), filepath.Join(manifests, "base"), "https://"+closed, iso.CABundle); err != nil {
		t.Fatal(err)
	}
	dryRun := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	probes := 0
	err = harness.WaitFor(ctx, 30*time.Second, "the apiserver to call the webhook at "+closed, func(ctx context.Context) (bool, error) {
		probes++
		got, err := cp.Client().CoreV1().Pods("payments").Create(ctx, pod("payments", "probe", "registry.example.com/platform/ledger:2"), dryRun)
		if err != nil {
			return false, err // nothing may refuse this pod, with the webhook or without
		}
		return className(got) == "", nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the apiserver fails open to the closed port after %d probes", probes)

	for _, c := range []struct {
		what, ns, image, class string
		refused                bool
		mentions               []string
	}{
		{"no class in a sandboxed namespace", "shop", "registry.example.com/shop/web:1", "", true,
			[]string{"isolator rule platform/untrusted-namespaces", "must run in runtime class kata-rc", "but it names none"}},
		{"hub image in a trusted namespace", "payments", "nginx", "", true, []string{"isolator rule platform/docker-hub-images"}},
		{"another spelling of Docker Hub", "payments", "docker.io:0443/evil/x", "", true, []string{"isolator rule platform/docker-hub-images"}},
		{"registry.hub.docker.com", "payments", "registry.hub.docker.com/evil/x", "", true, []string{"isolator rule platform/docker-hub-images"}},
		{"quay.io with a spelt-out port", "payments", "quay.io:0443/untrusted/x", "", true, []string{"isolator rule registries/untrusted-registries"}},
		{"ghcr.io without the rule's port", "payments", "ghcr.io/untrusted/x", "", true, []string{"isolator rule registries/untrusted-registries"}},
		{"runc-rc in a sandboxed namespace", "shop", "registry.example.com/shop/web:1", "runc-rc", true,
			[]string{"isolator rule platform/untrusted-namespaces", "but it names runc-rc"}},
		{"kata-rc named by the pod", "shop", "registry.example.com/shop/web:1", "kata-rc", false, nil},
		{"a platform pod in a trusted namespace", "payments", "registry.example.com/platform/ledger:2", "", false, nil},
		{"kube-system", "kube-system", "nginx", "", false, nil},
	} {
		p := pod(c.ns, "down", c.image)
		if c.class != "" {
			p.Spec.RuntimeClassName = ptr(c.class)
		}
		got, err := cp.Client().CoreV1().Pods(c.ns).Create(ctx, p, dryRun)
		if c.refused {
			refusedBy(t, c.what, err, byBackstop, c.mentions...)
		} else {
			admittedWith(t, c.what, got, err, c.class)
		}
	}
	for _, u := range imageUpdates(t) {
		refusedBy(t, u.what+": Docker Hub image into a runc-rc pod", u.apply(ctx, "payments", runc, "app", "docker.io/evil/x:1"), byBackstop,
			"isolator rule platform/docker-hub-images", "must run in runtime class kata-rc", "but it runs in runc-rc")
		refusedBy(t, u.what+": Docker Hub image into a runc-rc pod's sidecar", u.apply(ctx, "payments", runc, "proxy", "docker.io/evil/x:1"), byBackstop,
			"isolator rule platform/docker-hub-images")
		if err := u.apply(ctx, "payments", runc, "app", "registry.example.com/platform/ledger:4"); err != nil {
			t.Errorf("%s: a platform image update of a runc-rc pod was refused with the webhook down: %v", u.what, err)
		}
	}
}
