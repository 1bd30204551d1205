//go:build e2e

package bypass

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// 1. The pod names runc-rc itself in a sandboxed namespace.
func TestPodNamesLessIsolatedClass(t *testing.T) {
	ctx := testContext(t)
	p := pod("shop", "", "registry.example.com/shop/web:1")
	p.Spec.RuntimeClassName = ptr("runc-rc")
	_, err := attempt(t, ctx, p)
	refusedBy(t, "runc-rc in a Deny namespace", err, byWebhook, "rule platform/untrusted-namespaces", "names runtime class runc-rc", "kata-rc")
	p = pod("tenant-acme", "", "registry.example.com/acme/web:1")
	p.Spec.RuntimeClassName = ptr("runc-rc")
	got, err := attempt(t, ctx, p)
	admittedWith(t, "runc-rc in a Replace namespace", got, err, "kata-rc")
	// A class the policy doesn't know counts as least isolated. It must exist: the
	// apiserver's RuntimeClass plugin refuses a pod naming a class that doesn't, before
	// any webhook sees the pod.
	rc := &nodev1.RuntimeClass{ObjectMeta: metav1.ObjectMeta{Name: "runc-custom"}, Handler: "runc"}
	if _, err := cp.Client().NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client().NodeV1().RuntimeClasses().Delete(context.Background(), "runc-custom", metav1.DeleteOptions{})
	})
	p = pod("shop", "", "registry.example.com/shop/web:1")
	p.Spec.RuntimeClassName = ptr("runc-custom")
	_, err = attempt(t, ctx, p)
	refusedBy(t, "an unknown class", err, byWebhook, "rule platform/untrusted-namespaces", "runc-custom", "kata-rc")
}

// Found while testing: a pod that fakes isolator's own annotation, hoping its runc-rc
// passes as a class the webhook set itself. The webhook decides such a pod afresh. The
// pod runs a Docker Hub image in a trusted namespace, where the rule that applies
// (platform/docker-hub-images) denies a pod naming runc-rc: only a decision made afresh,
// as if the pod named no class, admits it, and with kata-rc.
func TestFakedAnnotation(t *testing.T) {
	ctx := testContext(t)
	p := pod("payments", "", "nginx:1.27")
	p.Spec.RuntimeClassName = ptr("runc-rc")
	p.Annotations = map[string]string{"isolator.dev/runtime-class": "runc-rc", "isolator.dev/rule": "platform/defaultRuntimeClass"}
	got, err := attempt(t, ctx, p)
	admittedWith(t, "faked isolator annotations", got, err, "kata-rc")
	if err == nil && got.Annotations["isolator.dev/rule"] != "platform/docker-hub-images" {
		t.Errorf("annotation rule %q, want platform/docker-hub-images: the webhook did not decide afresh", got.Annotations["isolator.dev/rule"])
	}
	// Without the faked annotation, the same pod is denied: the annotation is what made
	// the webhook decide afresh, and it decided for the sandbox.
	p = pod("payments", "", "nginx:1.27")
	p.Spec.RuntimeClassName = ptr("runc-rc")
	_, err = attempt(t, ctx, p)
	refusedBy(t, "runc-rc with a Docker Hub image", err, byWebhook, "rule platform/docker-hub-images", "runc-rc")
}

// 2. Controller-created pods arrive as a Pod CREATE from a controller's service account.
func TestControllerCreatedPods(t *testing.T) {
	ctx := testContext(t)
	labels := map[string]string{"app": "bypass-web"}
	replicas := int32(1)
	tmpl := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels},
		Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/shop/web:1"}}},
	}
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "bypass-web", Namespace: "shop"},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: tmpl}}
	dep.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyAlways
	if _, err := tenant.AppsV1().Deployments("shop").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cron := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: "shop"},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "nightly"}},
			Spec:       corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "job", Image: "nginx"}}},
		}}}}}
	if _, err := tenant.BatchV1().CronJobs("shop").Create(ctx, cron, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Run the CronJob now, as `kubectl create job --from=cronjob/nightly` does: the job
	// controller creates its pod.
	if _, err := cp.Kubectl(ctx, nil, "-n", "shop", "create", "job", "nightly-now", "--from=cronjob/nightly"); err != nil {
		t.Fatal(err)
	}
	// A runc-rc template in a Deny namespace: the controller's pods are refused, so the
	// ReplicaSet reports the denial and no pod exists.
	bad := dep.DeepCopy()
	bad.Name, bad.Spec.Selector.MatchLabels, bad.Spec.Template.Labels = "bypass-runc", map[string]string{"app": "bypass-runc"}, map[string]string{"app": "bypass-runc"}
	bad.Spec.Template.Spec.RuntimeClassName = ptr("runc-rc")
	if _, err := tenant.AppsV1().Deployments("shop").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bg := metav1.DeletePropagationBackground
		for _, d := range []string{"bypass-web", "bypass-runc"} {
			_ = cp.Client().AppsV1().Deployments("shop").Delete(context.Background(), d, metav1.DeleteOptions{PropagationPolicy: &bg})
		}
		_ = cp.Client().BatchV1().CronJobs("shop").Delete(context.Background(), "nightly", metav1.DeleteOptions{PropagationPolicy: &bg})
		_ = cp.Client().BatchV1().Jobs("shop").Delete(context.Background(), "nightly-now", metav1.DeleteOptions{PropagationPolicy: &bg})
	})
	for _, sel := range []string{"app=bypass-web", "app=nightly"} {
		err := harness.WaitFor(ctx, time.Minute, "pods "+sel, func(ctx context.Context) (bool, error) {
			pods, err := cp.Client().CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: sel})
			if err != nil || len(pods.Items) == 0 {
				return false, err
			}
			for i := range pods.Items {
				if c := className(&pods.Items[i]); c != "kata-rc" {
					return false, fmt.Errorf("controller-created pod %s has class %q", pods.Items[i].Name, c)
				}
			}
			return true, nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	err := harness.WaitFor(ctx, time.Minute, "the ReplicaSet of bypass-runc to report the denial", func(ctx context.Context) (bool, error) {
		rss, err := cp.Client().AppsV1().ReplicaSets("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=bypass-runc"})
		if err != nil || len(rss.Items) == 0 {
			return false, err
		}
		for _, c := range rss.Items[0].Status.Conditions {
			if c.Type == appsv1.ReplicaSetReplicaFailure && strings.Contains(c.Message, `admission webhook "pods.isolator.dev" denied the request: isolator: rule platform/untrusted-namespaces`) {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Error(err)
	}
	pods, err := cp.Client().CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=bypass-runc"})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("a runc-rc template produced pods: %v %v", len(pods.Items), err)
	}
}

// 3. Host namespaces can't be sandboxed: such pods are denied, saying why. A privileged
// pod is no escape either: it runs privileged inside its VM.
func TestHostNamespacesAndPrivileged(t *testing.T) {
	ctx := testContext(t)
	for _, host := range []string{"hostNetwork", "hostPID", "hostIPC"} {
		p := pod("shop", "", "registry.example.com/shop/tools:1")
		switch host {
		case "hostNetwork":
			p.Spec.HostNetwork = true
		case "hostPID":
			p.Spec.HostPID = true
		case "hostIPC":
			p.Spec.HostIPC = true
		}
		_, err := attempt(t, ctx, p)
		refusedBy(t, host, err, byWebhook, "rule platform/untrusted-namespaces", "the pod uses "+host, "kata-rc is a sandboxed (VM) runtime class")
	}
	// Naming kata-rc itself with hostNetwork, in a trusted namespace, is refused too.
	p := pod("payments", "", "registry.example.com/platform/tools:1")
	p.Spec.HostNetwork, p.Spec.RuntimeClassName = true, ptr("kata-rc")
	_, err := attempt(t, ctx, p)
	refusedBy(t, "hostNetwork naming kata-rc", err, byWebhook, "the pod uses hostNetwork", "the pod names kata-rc itself")
	// A privileged pod is sandboxed: it is privileged inside its VM, not on the node.
	p = pod("shop", "", "registry.example.com/shop/tools:1")
	p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
	got, err := attempt(t, ctx, p)
	admittedWith(t, "privileged", got, err, "kata-rc")
}

// 6. Image names that dodge a naive pattern. Every spelling of a Docker Hub image is
// the same image to containerd, and to isolator.
func TestImageNameTricks(t *testing.T) {
	ctx := testContext(t)
	const digest = "sha256:4bcff63911fcb4448bd4fdacec207030997caf25e9bea4045fa6c8c44de311d1"
	for _, image := range []string{
		"nginx", "nginx:1.27", "library/nginx", "docker.io/nginx", "docker.io/library/nginx:latest",
		"index.docker.io/library/nginx", "registry-1.docker.io/library/nginx", "DOCKER.IO/library/nginx",
		"nginx@" + digest, "nginx:1.27@" + digest, "bitnami/redis", "index.docker.io/bitnami/redis:7",
		// Found while testing: the HTTPS port reaches the same registry, in any spelling
		// of the number, and registry.hub.docker.com is Docker Hub too.
		"registry-1.docker.io:443/library/nginx", "docker.io:443/bitnami/redis", "INDEX.DOCKER.IO:443/library/nginx",
		"docker.io:0443/evil/x", "registry-1.docker.io:000443/library/nginx", "registry.hub.docker.com/library/nginx",
		"registry.hub.docker.com:0443/evil/x",
	} {
		got, err := attempt(t, ctx, pod("payments", "", image))
		admittedWith(t, image, got, err, "kata-rc")
		if err == nil && got.Annotations["isolator.dev/rule"] != "platform/docker-hub-images" {
			t.Errorf("%s: decided by %q, want platform/docker-hub-images", image, got.Annotations["isolator.dev/rule"])
		}
	}
	// Rules on other registries, written with or without the port, see every spelling:
	// quay.io/untrusted/** and ghcr.io:443/untrusted/** (registries/untrusted-registries).
	for _, image := range []string{"quay.io/untrusted/x", "quay.io:443/untrusted/x", "QUAY.IO:0443/untrusted/a/b:1",
		"ghcr.io/untrusted/x", "ghcr.io:443/untrusted/x", "ghcr.io:00443/untrusted/x"} {
		got, err := attempt(t, ctx, pod("payments", "", image))
		admittedWith(t, image, got, err, "kata-rc")
		if err == nil && got.Annotations["isolator.dev/rule"] != "registries/untrusted-registries" {
			t.Errorf("%s: decided by %q, want registries/untrusted-registries", image, got.Annotations["isolator.dev/rule"])
		}
	}
	for _, image := range []string{"localhost:5000/tool:1", "localhost:5000/team/tool@" + digest, "LOCALHOST:5000/tool", "localhost:05000/tool"} {
		got, err := attempt(t, ctx, pod("payments", "", image))
		admittedWith(t, image, got, err, "kata-rc")
	}
	// The platform's own registry spelled with :443 is still the platform's registry;
	// a different port is a different registry, which the platform rule doesn't trust.
	for _, image := range []string{"registry.example.com:443/platform/ledger:2", "registry.example.com:0443/platform/ledger:2"} {
		got, err := attempt(t, ctx, pod("payments", "", image))
		admittedWith(t, image, got, err, "runc-rc")
		if err == nil && got.Annotations["isolator.dev/rule"] != "platform/platform-images" {
			t.Errorf("%s: decided by %q, want platform/platform-images", image, got.Annotations["isolator.dev/rule"])
		}
	}
	// A name containerd would refuse (upper case in the path) is refused at admission.
	_, err := attempt(t, ctx, pod("payments", "", "registry.example.com/Platform/Ledger"))
	refusedBy(t, "an invalid image reference", err, byWebhook, "not a valid reference")
}

// 7. The untrusted image rides in an initContainer, or in a second container.
func TestInitContainers(t *testing.T) {
	ctx := testContext(t)
	p := pod("payments", "", "registry.example.com/platform/ledger:2")
	p.Spec.InitContainers = []corev1.Container{{Name: "fetch", Image: "curlimages/curl:8.10.1"}}
	got, err := attempt(t, ctx, p)
	admittedWith(t, "hub image in an initContainer", got, err, "kata-rc")
	p = pod("payments", "", "registry.example.com/platform/ledger:2")
	p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: "sidecar", Image: "docker.io/envoyproxy/envoy:v1.31"})
	got, err = attempt(t, ctx, p)
	admittedWith(t, "hub image in a second container", got, err, "kata-rc")
}

// Found while testing: `kubectl debug` adds an ephemeral container to a running pod
// through the pods/ephemeralcontainers subresource, which is an UPDATE the webhook does
// not see. An untrusted image must not join a runc pod this way.
func TestEphemeralContainer(t *testing.T) {
	ctx := testContext(t)
	got, err := attempt(t, ctx, pod("payments", "ledger-debug", "registry.example.com/platform/ledger:2"))
	if err != nil || className(got) != "runc-rc" {
		t.Fatalf("setup: a platform pod in a trusted namespace: %v %q", err, className(got))
	}
	patch := func(image string, dryRun ...string) error {
		ec := []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debugger-" + fmt.Sprint(len(image)), Image: image}}}
		body, _ := json.Marshal(map[string]any{"spec": map[string]any{"ephemeralContainers": ec}})
		_, err := tenant.CoreV1().Pods("payments").Patch(ctx, "ledger-debug", types.StrategicMergePatchType, body, metav1.PatchOptions{DryRun: dryRun}, "ephemeralcontainers")
		return err
	}
	// The apiserver picks up the backstop through an informer: wait until it applies to
	// this subresource (a dry run changes nothing).
	if err := harness.WaitFor(ctx, 30*time.Second, "the backstop to cover ephemeral containers", func(context.Context) (bool, error) {
		return patch("busybox:1.36", metav1.DryRunAll) != nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	refusedBy(t, "hub debug container into a runc pod", patch("busybox:1.36"), byBackstop, "isolator rule platform/docker-hub-images", "must run in runtime class kata-rc")
	if err := patch("registry.example.com/platform/debug:1"); err != nil {
		t.Errorf("a trusted debug container was refused: %v", err)
	}
}

// Found while testing: runtimeClassName can't be changed after creation, so a pod
// can't be admitted sandboxed and then moved to runc.
func TestRuntimeClassImmutable(t *testing.T) {
	ctx := testContext(t)
	got, err := attempt(t, ctx, pod("shop", "", "registry.example.com/shop/web:1"))
	if err != nil || className(got) != "kata-rc" {
		t.Fatalf("setup: %v %q", err, className(got))
	}
	got.Spec.RuntimeClassName = ptr("runc-rc")
	_, err = tenant.CoreV1().Pods("shop").Update(ctx, got, metav1.UpdateOptions{})
	refusedBy(t, "changing runtimeClassName", err, byValidation, "pod updates may not change fields other than")
}
