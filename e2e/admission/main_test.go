//go:build e2e

// Package admission runs isolator's admission scenarios against a real etcd,
// kube-apiserver and kube-controller-manager, with the real `isolator webhook` binary
// registered from manifests/ (patched to a URL clientConfig) and the example policies
// from manifests/examples/policies.yaml.
package admission

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/isolator-dev/isolator/e2e/harness"
)

var (
	cp        *harness.ControlPlane
	iso       *harness.Isolator
	manifests string
)

// Namespaces of the scenarios and the labels the example policies key on.
var namespaces = map[string]map[string]string{
	"shop":        {"isolator.dev/trust": "untrusted"},
	"payments":    {"isolator.dev/trust": "trusted"},
	"tenant-acme": nil,
	"plain":       nil,
}

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Options{}, &cp, setup))
}

// setup starts the webhook, registers it and loads the example policy.
func setup(ctx context.Context, c *harness.ControlPlane) error {
	var err error
	if iso, manifests, err = c.StartRegisteredIsolator(ctx, harness.IsolatorOptions{}); err != nil {
		return err
	}
	if err := c.Apply(ctx, "runtimeclasses"); err != nil {
		return err
	}
	for name, labels := range namespaces {
		if _, err := c.CreateNamespace(ctx, name, labels); err != nil {
			return err
		}
	}
	if err := c.Apply(ctx, "examples/policies.yaml"); err != nil {
		return err
	}
	return waitRules(ctx, 6)
}

// waitRules waits until the webhook's policy in force has want rules.
func waitRules(ctx context.Context, want int) error {
	return harness.WaitFor(ctx, 30*time.Second, fmt.Sprintf("the webhook to load %d rules", want), func(ctx context.Context) (bool, error) {
		v, err := metric(ctx, "isolator_policy_rules")
		return err == nil && int(v) == want, err
	})
}

var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) ([0-9.e+-]+)$`)

// metrics returns every sample the webhook exposes, keyed by name{labels}.
func metrics(ctx context.Context) (map[string]float64, error) {
	text, err := iso.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if m := metricLine.FindStringSubmatch(line); m != nil {
			v, err := strconv.ParseFloat(m[2], 64)
			if err == nil {
				out[m[1]] = v
			}
		}
	}
	return out, nil
}

func metric(ctx context.Context, key string) (float64, error) {
	all, err := metrics(ctx)
	if err != nil {
		return 0, err
	}
	v, ok := all[key]
	if !ok {
		return 0, fmt.Errorf("metric %s not exposed", key)
	}
	return v, nil
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// warnings collects the admission warnings the apiserver returns to a client.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.msgs...)
}

// clientWithWarnings is an admin client that records warnings.
func clientWithWarnings(t *testing.T) (kubernetes.Interface, *warnings) {
	t.Helper()
	w := &warnings{}
	cfg := cp.RESTConfig()
	cfg.WarningHandler = w
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

var _ rest.WarningHandler = (*warnings)(nil)

type podOpt func(*corev1.Pod)

func withClass(c string) podOpt { return func(p *corev1.Pod) { p.Spec.RuntimeClassName = &c } }
func withLabels(l map[string]string) podOpt {
	return func(p *corev1.Pod) { p.Labels = l }
}
func withInit(image string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: "init", Image: image})
	}
}
func withAnnotations(a map[string]string) podOpt { return func(p *corev1.Pod) { p.Annotations = a } }

func newPod(ns, name, image string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: image}}},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

// create creates the pod and returns what the apiserver stored.
func create(t *testing.T, ctx context.Context, c kubernetes.Interface, p *corev1.Pod) (*corev1.Pod, error) {
	t.Helper()
	got, err := c.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err == nil {
		t.Cleanup(func() {
			_ = cp.Client().CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		})
	}
	return got, err
}

func mustCreate(t *testing.T, ctx context.Context, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	got, err := create(t, ctx, cp.Client(), p)
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	return got
}

func class(p *corev1.Pod) string {
	if p.Spec.RuntimeClassName == nil {
		return ""
	}
	return *p.Spec.RuntimeClassName
}

// expectDecision asserts the stored pod's class and isolator's annotations.
func expectDecision(t *testing.T, p *corev1.Pod, wantClass, wantRule string) {
	t.Helper()
	if got := class(p); got != wantClass {
		t.Errorf("pod %s/%s: runtimeClassName %q, want %q", p.Namespace, p.Name, got, wantClass)
	}
	if wantRule == "" {
		return
	}
	if got := p.Annotations["isolator.dev/runtime-class"]; got != wantClass {
		t.Errorf("pod %s/%s: annotation isolator.dev/runtime-class %q, want %q", p.Namespace, p.Name, got, wantClass)
	}
	if got := p.Annotations["isolator.dev/rule"]; got != wantRule {
		t.Errorf("pod %s/%s: annotation isolator.dev/rule %q, want %q", p.Namespace, p.Name, got, wantRule)
	}
}

func expectForbidden(t *testing.T, err error, contains ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("pod was admitted; want a denial containing %q", contains)
	}
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("error is not a denial: %v", err)
	}
	for _, c := range contains {
		if !strings.Contains(err.Error(), c) {
			t.Errorf("denial %q does not mention %q", err.Error(), c)
		}
	}
}
