//go:build e2e

// Package controlplane checks the e2e control plane itself: that the harness's etcd,
// kube-apiserver and kube-controller-manager behave as the real cluster features isolator
// relies on (controllers creating pods, RuntimeClass admission, RBAC, apiserver restarts).
// When these fail, every other e2e suite would fail for reasons that have nothing to do
// with isolator.
package controlplane

import (
	"context"
	"fmt"
	"maps"
	"os"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/isolator-dev/isolator/e2e/harness"
)

var cp *harness.ControlPlane

func TestMain(m *testing.M) {
	os.Exit(harness.RunTests(m, harness.Options{}, &cp))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func createNamespace(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	if _, err := cp.CreateNamespace(ctx, name, nil); err != nil {
		t.Fatal(err)
	}
	return name
}

func podSpec() corev1.PodSpec {
	return corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.k8s.io/pause:3.10"}}}
}

// TestControllersCreatePods checks that the controller-manager creates the pods of
// workload objects, so that pods reach admission as they would in a cluster: created by
// kube-controller-manager and owned by their controller.
func TestControllersCreatePods(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t)
	ns := createNamespace(t, ctx, "smoke-workloads")
	client := cp.Client()

	tests := []struct {
		name     string
		create   func() (metav1.Object, error)
		wantPods int
		// ownerKind is the kind of the pods' controller.
		ownerKind string
		// checkOwner checks the pods' controller object and its relation to what was created.
		checkOwner func(t *testing.T, created metav1.Object, owner metav1.OwnerReference)
	}{
		{
			name: "deployment",
			create: func() (metav1.Object, error) {
				labels := map[string]string{"app": "web"}
				return client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
					ObjectMeta: metav1.ObjectMeta{Name: "web"},
					Spec: appsv1.DeploymentSpec{
						Replicas: ptr.To[int32](2),
						Selector: &metav1.LabelSelector{MatchLabels: labels},
						Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec()},
					},
				}, metav1.CreateOptions{})
			},
			wantPods:  2,
			ownerKind: "ReplicaSet",
			checkOwner: func(t *testing.T, created metav1.Object, owner metav1.OwnerReference) {
				rs, err := client.AppsV1().ReplicaSets(ns).Get(ctx, owner.Name, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("pod's ReplicaSet: %v", err)
				}
				ref := metav1.GetControllerOf(rs)
				if ref == nil || ref.Kind != "Deployment" || ref.Name != created.GetName() || ref.UID != created.GetUID() {
					t.Errorf("ReplicaSet %s controller = %+v, want Deployment %s (%s)", rs.Name, ref, created.GetName(), created.GetUID())
				}
			},
		},
		{
			name: "job",
			create: func() (metav1.Object, error) {
				spec := podSpec()
				spec.RestartPolicy = corev1.RestartPolicyNever
				return client.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{
					ObjectMeta: metav1.ObjectMeta{Name: "batch"},
					Spec: batchv1.JobSpec{
						Parallelism: ptr.To[int32](1),
						Completions: ptr.To[int32](1),
						Template:    corev1.PodTemplateSpec{Spec: spec},
					},
				}, metav1.CreateOptions{})
			},
			wantPods:  1,
			ownerKind: "Job",
			checkOwner: func(t *testing.T, created metav1.Object, owner metav1.OwnerReference) {
				if owner.Name != created.GetName() || owner.UID != created.GetUID() {
					t.Errorf("pod's Job = %s (%s), want %s (%s)", owner.Name, owner.UID, created.GetName(), created.GetUID())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			created, err := tt.create()
			if err != nil {
				t.Fatalf("create %s: %v", tt.name, err)
			}
			pods := waitForOwnedPods(t, ctx, client, ns, created.GetName(), tt.wantPods)
			for _, pod := range pods {
				owner := metav1.GetControllerOf(&pod)
				if owner == nil || owner.Kind != tt.ownerKind {
					t.Fatalf("pod %s controller = %+v, want a %s", pod.Name, owner, tt.ownerKind)
				}
				tt.checkOwner(t, created, *owner)
				// The creating client names itself in managedFields: the pod came from the
				// controller-manager, not from this test.
				if got := podCreator(pod); got != "kube-controller-manager" {
					t.Errorf("pod %s was created by %q, want kube-controller-manager", pod.Name, got)
				}
				if pod.Spec.ServiceAccountName != "default" {
					t.Errorf("pod %s serviceAccountName = %q, want default (set by ServiceAccount admission)", pod.Name, pod.Spec.ServiceAccountName)
				}
			}
		})
	}
}

// waitForOwnedPods waits until want pods in ns have a controller chain that leads to the
// object named owner (directly, or through a ReplicaSet named after it).
func waitForOwnedPods(t *testing.T, ctx context.Context, client kubernetes.Interface, ns, owner string, want int) []corev1.Pod {
	t.Helper()
	var found []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		found = found[:0]
		for _, pod := range pods.Items {
			if ref := metav1.GetControllerOf(&pod); ref != nil && (ref.Name == owner || strings.HasPrefix(ref.Name, owner+"-")) {
				found = append(found, pod)
			}
		}
		return len(found) == want, nil
	})
	if err != nil {
		t.Fatalf("waiting for %d pods of %s/%s: %v (found %d)", want, ns, owner, err, len(found))
	}
	return found
}

func podCreator(pod corev1.Pod) string {
	for _, mf := range pod.ManagedFields {
		if mf.Operation == metav1.ManagedFieldsOperationUpdate && mf.Subresource == "" {
			return mf.Manager
		}
	}
	return ""
}

// TestRuntimeClassAdmission checks the in-tree RuntimeClass admission plugin that
// isolator relies on: it copies the class's overhead and scheduling into the pod, and
// rejects a pod that names a class that does not exist.
func TestRuntimeClassAdmission(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t)
	ns := createNamespace(t, ctx, "smoke-runtimeclass")
	client := cp.Client()

	overhead := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("250m"),
		corev1.ResourceMemory: resource.MustParse("160Mi"),
	}
	toleration := corev1.Toleration{Key: "isolator.dev/kata-not-ready", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	_, err := client.NodeV1().RuntimeClasses().Create(ctx, &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke-kata"},
		Handler:    "kata",
		Overhead:   &nodev1.Overhead{PodFixed: overhead},
		Scheduling: &nodev1.Scheduling{
			NodeSelector: map[string]string{"isolator.dev/kata-runtime": "true"},
			Tolerations:  []corev1.Toleration{toleration},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create RuntimeClass: %v", err)
	}

	tests := []struct {
		name             string
		runtimeClass     string
		nodeSelector     map[string]string
		wantErr          string
		wantOverhead     corev1.ResourceList
		wantNodeSelector map[string]string
	}{
		{
			name:             "class scheduling and overhead are applied",
			runtimeClass:     "smoke-kata",
			wantOverhead:     overhead,
			wantNodeSelector: map[string]string{"isolator.dev/kata-runtime": "true"},
		},
		{
			name:             "pod's own node selector is merged",
			runtimeClass:     "smoke-kata",
			nodeSelector:     map[string]string{"zone": "a"},
			wantOverhead:     overhead,
			wantNodeSelector: map[string]string{"isolator.dev/kata-runtime": "true", "zone": "a"},
		},
		{
			name:         "conflicting node selector is rejected",
			runtimeClass: "smoke-kata",
			nodeSelector: map[string]string{"isolator.dev/kata-runtime": "false"},
			wantErr:      "conflict",
		},
		{
			name:         "missing class is rejected",
			runtimeClass: "does-not-exist",
			wantErr:      `RuntimeClass "does-not-exist" not found`,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := podSpec()
			spec.RuntimeClassName = ptr.To(tt.runtimeClass)
			spec.NodeSelector = tt.nodeSelector
			pod, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pod-%d", i)},
				Spec:       spec,
			}, metav1.CreateOptions{})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("create pod: err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("create pod: %v", err)
			}
			// Read back what was stored, not what the create call returned.
			stored, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !apiequality.Semantic.DeepEqual(stored.Spec.Overhead, tt.wantOverhead) {
				t.Errorf("spec.overhead = %v, want %v", stored.Spec.Overhead, tt.wantOverhead)
			}
			if !maps.Equal(stored.Spec.NodeSelector, tt.wantNodeSelector) {
				t.Errorf("spec.nodeSelector = %v, want %v", stored.Spec.NodeSelector, tt.wantNodeSelector)
			}
			if !hasToleration(stored.Spec.Tolerations, toleration) {
				t.Errorf("spec.tolerations = %v, want them to include %v", stored.Spec.Tolerations, toleration)
			}
			if got := ptr.Deref(stored.Spec.RuntimeClassName, ""); got != tt.runtimeClass {
				t.Errorf("spec.runtimeClassName = %q, want %q", got, tt.runtimeClass)
			}
		})
	}
}

func hasToleration(list []corev1.Toleration, want corev1.Toleration) bool {
	for _, tol := range list {
		if tol.MatchToleration(&want) {
			return true
		}
	}
	return false
}

// TestRBACAppliesToUsers checks that a user who is not an admin is subject to RBAC, so
// later suites can test what tenants may and may not do.
func TestRBACAppliesToUsers(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t)
	ns := createNamespace(t, ctx, "smoke-rbac")
	cfg, err := cp.UserConfig("tenant-a")
	if err != nil {
		t.Fatal(err)
	}
	tenant, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tenant.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("tenant-a lists pods without a role binding: err = %v, want Forbidden", err)
	}
	// "edit" is an aggregated ClusterRole: its rules come from the clusterrole aggregation
	// controller, so this also checks that the controller-manager runs it.
	_, err = cp.Client().RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant-a-edit"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "edit"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "tenant-a"}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lastErr error
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, lastErr = tenant.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return lastErr == nil, nil
	})
	if err != nil {
		t.Fatalf("tenant-a with the edit role cannot list pods: %v (last: %v)", err, lastErr)
	}
	if _, err := tenant.CoreV1().Pods("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("tenant-a lists pods outside its namespace: err = %v, want Forbidden", err)
	}
}

// TestRestartAPIServer checks the restart used by fault tests: the apiserver comes back on
// the same address with the same data, the existing clients keep working, and the
// controller-manager reconnects and keeps creating pods.
func TestRestartAPIServer(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t)
	ns := createNamespace(t, ctx, "smoke-restart")
	client := cp.Client()
	before, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "before"},
		Data:       map[string]string{"k": "v"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldPID := cp.Process(harness.APIServer).PID()
	url := cp.URL()

	start := time.Now()
	if err := cp.RestartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver restarted in %s", time.Since(start).Round(time.Millisecond))

	if pid := cp.Process(harness.APIServer).PID(); pid == oldPID {
		t.Errorf("kube-apiserver pid %d did not change", pid)
	}
	if cp.URL() != url {
		t.Errorf("URL changed from %s to %s", url, cp.URL())
	}
	got, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "before", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("read after restart: %v", err)
	}
	if got.UID != before.UID || got.Data["k"] != "v" {
		t.Errorf("object after restart = %s %v, want %s %v", got.UID, got.Data, before.UID, before.Data)
	}
	if _, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "after"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("write after restart: %v", err)
	}
	spec := podSpec()
	spec.RestartPolicy = corev1.RestartPolicyNever
	job, err := client.BatchV1().Jobs(ns).Create(ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "after-restart"},
		Spec:       batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: spec}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	waitForOwnedPods(t, ctx, client, ns, job.Name, 1)
	t.Logf("the controller-manager created the Job's pod %s after the restart", time.Since(start).Round(time.Millisecond))
}
