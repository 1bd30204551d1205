//go:build e2e

// Package faults checks that isolator loses no admission and admits nothing wrongly
// while its surroundings fail: a rolling restart of the webhook under load, a restart
// of the kube-apiserver, and a policy ConfigMap deleted. (The node bootstrapper's
// faults are in e2e/node.)
package faults

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
)

var (
	cp        *harness.ControlPlane
	manifests string
	ca        *harness.CA
	certDir   string
	bal       *harness.Balancer
	first     *harness.Isolator
)

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Options{}, &cp, setup))
}

// setup runs one webhook replica behind a Balancer (the stand-in for the isolator-webhook
// Service) with the example policies.
func setup(ctx context.Context, c *harness.ControlPlane) error {
	var err error
	if manifests, err = harness.ManifestsDir(); err != nil {
		return err
	}
	certDir = filepath.Join(c.WorkDir(), "serving-certs")
	if ca, err = harness.WriteServingCerts(certDir, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}); err != nil {
		return err
	}
	// The balancer lives as long as the test binary.
	if bal, err = harness.NewBalancer(context.Background(), 100*time.Millisecond); err != nil {
		return err
	}
	if first, err = startReplica(ctx, c, "isolator-a"); err != nil {
		return err
	}
	if err := harness.RegisterWebhooks(ctx, c.Client(), filepath.Join(manifests, "base"), "https://"+bal.Addr(), ca.CertPEM); err != nil {
		return err
	}
	if err := c.Apply(ctx, "runtimeclasses", "examples/policies.yaml"); err != nil {
		return err
	}
	for name, labels := range map[string]map[string]string{
		"shop":     {"isolator.dev/trust": "untrusted"},
		"payments": {"isolator.dev/trust": "trusted"},
	} {
		if _, err := c.CreateNamespace(ctx, name, labels); err != nil {
			return err
		}
	}
	return waitFor(ctx, c, "the policy and the backstop", func(ctx context.Context) bool {
		return dryRunClass(ctx, c, pod("payments", "probe", "nginx", nil)) == "kata-rc" && backstopRules(ctx, c) == "5"
	})
}

// startReplica starts one webhook replica on the shared serving certificate and puts it
// behind the balancer. A 2s shutdown delay outlasts the balancer's 100ms readiness poll,
// as a preStop sleep outlasts endpoint propagation in a cluster.
func startReplica(ctx context.Context, c *harness.ControlPlane, name string) (*harness.Isolator, error) {
	iso, err := c.StartIsolator(ctx, harness.IsolatorOptions{Name: name, CertDir: certDir, Args: []string{"--shutdown-delay=2s"}})
	if err != nil {
		return nil, err
	}
	bal.Add(iso)
	return iso, nil
}

func pod(ns, name, image string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
}

func className(p *corev1.Pod) string {
	if p == nil || p.Spec.RuntimeClassName == nil {
		return ""
	}
	return *p.Spec.RuntimeClassName
}

func dryRunClass(ctx context.Context, c *harness.ControlPlane, p *corev1.Pod) string {
	got, err := c.Client().CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return "error: " + err.Error()
	}
	return className(got)
}

func backstopRules(ctx context.Context, c *harness.ControlPlane) string {
	vap, err := c.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "isolator-backstop", metav1.GetOptions{})
	if err != nil {
		return ""
	}
	return vap.Annotations["isolator.dev/rules"]
}

func waitFor(ctx context.Context, c *harness.ControlPlane, what string, cond func(context.Context) bool) error {
	return harness.WaitFor(ctx, time.Minute, what, func(ctx context.Context) (bool, error) { return cond(ctx), nil })
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// load creates real pods in shop (sandboxed) and payments (platform images, runc-rc)
// from several goroutines until stop is closed, and counts every outcome.
type load struct {
	created, failed, wrong atomic.Int64
	mu                     sync.Mutex
	problems               []string
}

func (l *load) run(ctx context.Context, t *testing.T, workers int, prefix string, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ns, image, want := "shop", "registry.example.com/shop/web:1", "kata-rc"
				if i%2 == 1 {
					ns, image, want = "payments", "registry.example.com/platform/ledger:2", "runc-rc"
				}
				got, err := cp.Client().CoreV1().Pods(ns).Create(ctx, pod(ns, fmt.Sprintf("%s-%d-%d", prefix, w, i), image, nil), metav1.CreateOptions{})
				switch {
				case err != nil:
					l.failed.Add(1)
					l.note(fmt.Sprintf("%s/%s-%d-%d: %v", ns, prefix, w, i, err))
				case className(got) != want:
					l.wrong.Add(1)
					l.note(fmt.Sprintf("%s/%s: class %q, want %q", ns, got.Name, className(got), want))
				default:
					l.created.Add(1)
				}
			}
		}()
	}
	return &wg
}

func (l *load) note(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < 10 {
		l.problems = append(l.problems, s)
	}
}

func (l *load) report(t *testing.T, what string) {
	t.Helper()
	t.Logf("%s: %d pods created with the right class, %d admissions failed, %d admitted with the wrong class",
		what, l.created.Load(), l.failed.Load(), l.wrong.Load())
	if l.failed.Load() != 0 || l.wrong.Load() != 0 {
		t.Errorf("%s lost or misdecided admissions:\n  %s", what, strings.Join(l.problems, "\n  "))
	}
	if l.created.Load() == 0 {
		t.Errorf("%s: no pod was created: the load never ran", what)
	}
}
