//go:build e2e

package manifests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/isolator-dev/isolator/backstop"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/owner"
	"github.com/isolator-dev/isolator/policy"
	"github.com/isolator-dev/isolator/webhook/backstopsync"
)

func loadSnapshot(t *testing.T, file string) *policy.Snapshot {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srcs, errs := policy.ReadSources(filepath.Base(file), f)
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	snap, err := policy.Compile(srcs...)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// registerDeadWebhook installs isolator's webhook configurations from manifests/base,
// pointed at a port where nothing listens: the webhook is down, and the apiserver fails
// open for pods as configured.
func registerDeadWebhook(t *testing.T, ctx context.Context) {
	t.Helper()
	muts, _, err := harness.WebhookConfigurations(filepath.Join(manifestsDir(t), "base"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range muts {
		for i := range m.Webhooks {
			url := "https://127.0.0.1:1/mutate-pods"
			m.Webhooks[i].ClientConfig.Service, m.Webhooks[i].ClientConfig.URL = nil, &url
		}
		if _, err := cp.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, m, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			err := cp.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), m.Name, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("deleting MutatingWebhookConfiguration %s: %v", m.Name, err)
			}
		})
	}
}

// TestBackstopWithoutWebhook applies the backstop of the example policies with the
// reconciler the webhook runs, while the webhook itself is down, and checks what the
// apiserver alone admits.
func TestBackstopWithoutWebhook(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	root := manifestsDir(t)
	mustApply(t, "-k", filepath.Join(root, "runtimeclasses"))
	registerDeadWebhook(t, ctx)
	for name, labels := range map[string]map[string]string{
		"tenant-acme": nil,
		"shop":        {"isolator.dev/trust": "untrusted"},
		"payments":    {"isolator.dev/trust": "trusted"},
		"plain":       nil,
	} {
		if _, err := cp.CreateNamespace(ctx, name, labels); err != nil {
			t.Fatal(err)
		}
	}

	c, err := client.New(cp.RESTConfig(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := backstopsync.NewReconciler(c, testr.New(t), backstop.Options{}, backstopsync.NewMetrics(prometheus.NewRegistry()))
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconciler: %v", err)
		}
	}()
	r.Update(loadSnapshot(t, filepath.Join(root, "examples", "policies.yaml")))

	// The first case also waits for the apiserver to load the new policy.
	eventually(t, "the backstop to deny an unsandboxed tenant pod", func(ctx context.Context) error {
		err := create(ctx, cp.Client(), "tenant-acme", testPod("app", "registry.example.com/acme/app:0.9", ""))
		if err == nil {
			return fmt.Errorf("admitted")
		}
		return checkDenied(err, "platform/tenant-namespaces", "kata-rc")
	})

	err = create(ctx, cp.Client(), "tenant-acme", testPod("app", "registry.example.com/acme/app:0.9", ""))
	t.Logf("a tenant pod without a runtime class, while the webhook is down: %v", err)

	cases := []struct {
		name, ns         string
		pod              *corev1.Pod
		deniedBy, reason string // empty: admitted
	}{
		{"tenant pod naming kata-rc", "tenant-acme", testPod("app", "registry.example.com/acme/app:0.9", "kata-rc"), "", ""},
		{"tenant pod naming runc-rc", "tenant-acme", testPod("app", "registry.example.com/acme/app:0.9", "runc-rc"), "platform/tenant-namespaces", "it names runc-rc"},
		{"untrusted namespace", "shop", testPod("web", "registry.example.com/shop/storefront:1.4.2", ""), "platform/untrusted-namespaces", "kata-rc"},
		{"plain pod elsewhere", "plain", testPod("app", "registry.example.com/shop/app:1", ""), "", ""},
		{"Docker Hub image elsewhere", "plain", testPod("app", "nginx", ""), "platform/docker-hub-images", "kata-rc"},
		{"Docker Hub image spelt otherwise", "plain", testPod("app", "INDEX.DOCKER.IO/library/nginx:1.25", ""), "platform/docker-hub-images", "kata-rc"},
		{"platform image in a trusted namespace stays on runc", "payments", testPod("ledger", "registry.example.com/platform/ledger:2.0.1", ""), "", ""},
		{"CI runner in a trusted namespace", "payments", withLabels(testPod("runner", "registry.example.com/platform/runner:3.1", ""), map[string]string{"app": "ci-runner"}), "ci/ci-runners", "kata-rc"},
		{"sandboxed class with host network", "shop", withHostNetwork(testPod("tools", "registry.example.com/shop/tools:1", "kata-rc")), "", "hostNetwork"},
		{"Docker Hub init container", "plain", withInit(testPod("app", "registry.example.com/shop/app:1", ""), "busybox"), "platform/docker-hub-images", "kata-rc"},
		{"kube-system is never checked", "kube-system", testPod("app", "nginx", ""), "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := create(ctx, cp.Client(), tc.ns, tc.pod)
			if tc.deniedBy == "" && tc.reason == "" {
				if err != nil {
					t.Fatalf("denied: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("admitted, want denied")
			}
			if err := checkDenied(err, tc.deniedBy, tc.reason); err != nil {
				t.Error(err)
			}
		})
	}

	// A policy without a sandboxed scope has no backstop: the reconciler deletes it.
	r.Update(loadSnapshot(t, filepath.Join(root, "examples", "audit-first.yaml")))
	eventually(t, "the stale backstop to be deleted", func(ctx context.Context) error {
		_, err := cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, backstop.Name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("ValidatingAdmissionPolicy %s still there (%w)", backstop.Name, err)
		}
		_, err = cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicyBindings().Get(ctx, backstop.Name, metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("ValidatingAdmissionPolicyBinding %s still there (%w)", backstop.Name, err)
		}
		return nil
	})
	eventually(t, "the tenant pod to be admitted again", func(ctx context.Context) error {
		return create(ctx, cp.Client(), "tenant-acme", testPod("app", "registry.example.com/acme/app:0.9", ""))
	})
}

// TestBackstopFromTheCommandLine applies what `isolator policy backstop` prints, as a
// GitOps user would, and checks it denies the same way.
func TestBackstopFromTheCommandLine(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := context.Background()
	root := manifestsDir(t)
	bin, err := harness.IsolatorBinary()
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCommand(ctx, bin, "policy", "backstop", "--policy", filepath.Join(root, "examples", "tenant-namespaces.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, "-k", filepath.Join(root, "runtimeclasses"))
	if _, err := cp.Kubectl(ctx, strings.NewReader(out), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = cp.Kubectl(context.Background(), strings.NewReader(out), "delete", "--ignore-not-found", "-f", "-")
	})
	if _, err := cp.CreateNamespace(ctx, "customer-7", nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the backstop to deny an unsandboxed customer pod", func(ctx context.Context) error {
		err := create(ctx, cp.Client(), "customer-7", testPod("app", "registry.example.com/c7/app:1", ""))
		if err == nil {
			return fmt.Errorf("admitted")
		}
		return checkDenied(err, "tenants/tenant-namespaces", "kata-rc")
	})
	if err := create(ctx, cp.Client(), "customer-7", testPod("app", "registry.example.com/c7/app:1", "kata-rc")); err != nil {
		t.Errorf("a customer pod naming kata-rc is denied: %v", err)
	}
}

func checkDenied(err error, rule, reason string) error {
	if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		return fmt.Errorf("denied with an unexpected error: %w", err)
	}
	msg := err.Error()
	if rule != "" && !strings.Contains(msg, "isolator rule "+rule) {
		return fmt.Errorf("denial does not name rule %s: %s", rule, msg)
	}
	if reason != "" && !strings.Contains(msg, reason) {
		return fmt.Errorf("denial does not say %q: %s", reason, msg)
	}
	return nil
}

func withLabels(p *corev1.Pod, l map[string]string) *corev1.Pod { p.Labels = l; return p }
func withHostNetwork(p *corev1.Pod) *corev1.Pod                 { p.Spec.HostNetwork = true; return p }
func withInit(p *corev1.Pod, image string) *corev1.Pod {
	p.Spec.InitContainers = []corev1.Container{{Name: "init", Image: image}}
	return p
}

// TestBackstopGoesWithIsolator: the backstop the webhook creates at run time is owned by
// isolator's MutatingWebhookConfiguration, so removing isolator's manifests (kubectl
// delete -k, helm uninstall, a GitOps prune) makes kube-controller-manager's garbage
// collector remove the backstop too; and a reconciler still running during the removal
// creates nothing new.
func TestBackstopGoesWithIsolator(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := context.Background()
	root := manifestsDir(t)
	muts, _, err := harness.WebhookConfigurations(filepath.Join(root, "base"))
	if err != nil {
		t.Fatal(err)
	}
	mwc := muts[0]
	url := "https://127.0.0.1:1/mutate-pods" // down: this test is about the backstop alone
	mwc.Webhooks[0].ClientConfig.Service, mwc.Webhooks[0].ClientConfig.URL = nil, &url
	mwcs := cp.Client().AdmissionregistrationV1().MutatingWebhookConfigurations()
	created, err := mwcs.Create(ctx, mwc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mwcs.Delete(context.Background(), mwc.Name, metav1.DeleteOptions{}) })

	c, err := client.New(cp.RESTConfig(), client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := backstopsync.NewReconciler(c, testr.New(t), backstop.Options{}, backstopsync.NewMetrics(prometheus.NewRegistry()))
	r.OwnedBy(c, mwc.Name)
	snap := loadSnapshot(t, filepath.Join(root, "examples", "tenant-namespaces.yaml"))
	if err := r.Reconcile(ctx, snap); err != nil {
		t.Fatal(err)
	}
	vaps := cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies()
	bindings := cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicyBindings()
	vap, err := vaps.Get(ctx, backstop.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	binding, err := bindings.Get(ctx, backstop.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, refs := range [][]metav1.OwnerReference{vap.OwnerReferences, binding.OwnerReferences} {
		if len(refs) != 1 || refs[0].Kind != "MutatingWebhookConfiguration" || refs[0].Name != mwc.Name || refs[0].UID != created.UID {
			t.Fatalf("backstop owner references = %+v, want the MutatingWebhookConfiguration %s (uid %s)", refs, mwc.Name, created.UID)
		}
	}

	// Removing isolator: its webhook configuration goes.
	if err := mwcs.Delete(ctx, mwc.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the garbage collector to remove the backstop", func(ctx context.Context) error {
		if _, err := vaps.Get(ctx, backstop.Name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("ValidatingAdmissionPolicy %s still there", backstop.Name)
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		if _, err := bindings.Get(ctx, backstop.Name, metav1.GetOptions{}); err == nil {
			return fmt.Errorf("ValidatingAdmissionPolicyBinding %s still there", backstop.Name)
		} else if !apierrors.IsNotFound(err) {
			return err
		}
		return nil
	})
	// A webhook replica still running while the manifests go applies nothing.
	if err := r.Reconcile(ctx, snap); !errors.Is(err, owner.ErrMissing) {
		t.Fatalf("Reconcile without the owner = %v, want owner.ErrMissing", err)
	}
	if _, err := vaps.Get(ctx, backstop.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the reconciler recreated the backstop without its owner (%v)", err)
	}

	// isolator comes back (the configuration is created anew, with a new UID): the
	// running reconciler's resync puts the backstop back under the new owner without a
	// policy change, and puts it back again when someone deletes it.
	recreated, err := mwcs.Create(ctx, mwc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.Resync = 200 * time.Millisecond
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Start(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("reconciler: %v", err)
		}
	}()
	r.Update(snap)
	ownedByRecreated := func(ctx context.Context) error {
		vap, err := vaps.Get(ctx, backstop.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if refs := vap.OwnerReferences; len(refs) != 1 || refs[0].UID != recreated.UID {
			return fmt.Errorf("owner references %+v, want uid %s", refs, recreated.UID)
		}
		return nil
	}
	eventually(t, "the backstop under the new owner", ownedByRecreated)
	if err := vaps.Delete(ctx, backstop.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the resync to put a deleted backstop back", ownedByRecreated)
}
