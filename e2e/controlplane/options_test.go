//go:build e2e

package controlplane

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// TestOwnControlPlaneWithFlags checks what suites with special needs rely on: a control
// plane of their own, without the controller-manager, with extra apiserver flags. Here the
// RuntimeClass admission plugin is turned off, so a pod naming a missing class is stored
// (the shared control plane rejects it, see TestRuntimeClassAdmission).
func TestOwnControlPlaneWithFlags(t *testing.T) {
	own := harness.StartForTest(t, harness.Options{
		Components:     []harness.Component{harness.Etcd, harness.APIServer},
		APIServerFlags: []string{"--disable-admission-plugins=RuntimeClass"},
	})
	if own.URL() == cp.URL() {
		t.Fatalf("own control plane shares the URL %s", own.URL())
	}
	if p := own.Process(harness.ControllerManager); p != nil {
		t.Errorf("kube-controller-manager runs although not asked for (pid %d)", p.PID())
	}
	logs := own.LogPaths()
	if len(logs) != 2 || logs[harness.Etcd] == "" || logs[harness.APIServer] == "" {
		t.Errorf("LogPaths = %v, want etcd and kube-apiserver", logs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns, err := own.CreateNamespace(ctx, "own", nil)
	if err != nil {
		t.Fatal(err)
	}
	client := own.Client()
	// Without the controller-manager nobody creates the default ServiceAccount that
	// ServiceAccount admission looks up.
	if _, err := client.CoreV1().ServiceAccounts(ns.Name).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "default"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spec := podSpec()
	spec.RuntimeClassName = ptr.To("does-not-exist")
	pod, err := client.CoreV1().Pods(ns.Name).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       spec,
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod with the RuntimeClass plugin off: %v", err)
	}
	if got := ptr.Deref(pod.Spec.RuntimeClassName, ""); got != "does-not-exist" || pod.Spec.Overhead != nil {
		t.Errorf("stored pod runtimeClassName = %q, overhead = %v; want does-not-exist and none", got, pod.Spec.Overhead)
	}
}

// TestStartFailureSaysWhy checks the error a broken start gives: it names the component
// and carries the end of its log, and nothing is left behind.
func TestStartFailureSaysWhy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := harness.Start(ctx, harness.Options{
		Components:     []harness.Component{harness.Etcd, harness.APIServer},
		APIServerFlags: []string{"--no-such-flag"},
	})
	if err == nil {
		_ = got.Stop()
		t.Fatal("Start succeeded with an unknown kube-apiserver flag")
	}
	for _, want := range []string{"kube-apiserver exited before", "/readyz was ready", "unknown flag: --no-such-flag"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// The error names the work directory's log; Start removed it with everything else.
	i := strings.Index(err.Error(), "last lines of ")
	if i < 0 {
		t.Fatalf("error names no log file:\n%v", err)
	}
	logPath := strings.TrimSuffix(strings.Fields(err.Error()[i+len("last lines of "):])[0], ":")
	if _, statErr := os.Stat(logPath); !os.IsNotExist(statErr) {
		t.Errorf("%s still exists after a failed Start (stat: %v)", logPath, statErr)
	}
}
