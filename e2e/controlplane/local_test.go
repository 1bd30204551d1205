//go:build e2e

package controlplane

import (
	"context"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestServiceWebhooksStayLocal: a webhook addressed by a Service (as installed
// manifests and charts address theirs) is called at the Service's endpoints. With none
// (no kubelet runs its pods) the call fails at once inside the apiserver, and no packet
// goes to the Service's cluster IP, which nothing on this machine routes.
func TestServiceWebhooksStayLocal(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := context.Background()
	ns := "service-webhook"
	if _, err := cp.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "hook"}, Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(9443)}}}}
	created, err := cp.Client().CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.Spec.ClusterIP == "" || created.Spec.ClusterIP == corev1.ClusterIPNone {
		t.Fatalf("the Service got no cluster IP: %q", created.Spec.ClusterIP)
	}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "service-webhook-test"},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "configmaps.service-webhook.test",
			AdmissionReviewVersions: []string{"v1"},
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{Namespace: ns, Name: "hook", Path: ptr.To("/validate"), Port: ptr.To[int32](443)},
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"configmaps"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			FailurePolicy:     ptr.To(admissionregistrationv1.Fail),
			SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:    ptr.To[int32](3),
		}},
	}
	if _, err := cp.Client().AdmissionregistrationV1().ValidatingWebhookConfigurations().Create(ctx, vwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client().AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(context.Background(), vwc.Name, metav1.DeleteOptions{})
	})
	var err2 error
	for range 50 { // until the apiserver's informer has the configuration
		_, err2 = cp.Client().CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"}},
			metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err2 != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err2 == nil {
		t.Fatal("the webhook was never called")
	}
	msg := err2.Error()
	if !strings.Contains(msg, "failed calling webhook") || !strings.Contains(msg, "no endpoints available for service") {
		t.Errorf("calling a Service webhook without endpoints: %v; want the apiserver's \"no endpoints available for service\"", err2)
	}
	if strings.Contains(msg, created.Spec.ClusterIP) || strings.Contains(msg, "x509") || strings.Contains(msg, "tls:") {
		t.Errorf("the apiserver dialled out for the Service webhook: %v", err2)
	}
	t.Logf("refused locally: %v", err2)
}
