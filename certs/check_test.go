package certs

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The fixtures in testdata/check are fixed certificates (made once with NewCA and
// IssueServing from 2026-01-01), so that the checklists are stable golden files.
var checkNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "check", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixtureCert(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	c, err := ParseCertificates(fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return c[0]
}

// assertGolden compares got with testdata/check/<name>.golden; UPDATE_GOLDEN=1 rewrites it.
func assertGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", "check", name+".golden")
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the golden file (UPDATE_GOLDEN=1 refreshes it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestDiagnose(t *testing.T) {
	ca, other := fixture(t, "ca.crt"), fixture(t, "other-ca.crt")
	secretWith := func(leaf string, ann map[string]string) *corev1.Secret {
		return &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: SecretName, Namespace: "isolator-system", Annotations: ann},
			Type:       corev1.SecretTypeTLS,
			Data: map[string][]byte{
				corev1.TLSCertKey: fixture(t, leaf+".crt"), corev1.TLSPrivateKeyKey: fixture(t, leaf+".key"), corev1.ServiceAccountRootCAKey: ca,
			},
		}
	}
	configs := func(mutBundle, valBundle []byte) []ConfigurationFacts {
		svcName, target := ServerNameFor(ServiceName, "isolator-system", "")
		return []ConfigurationFacts{
			{Kind: "MutatingWebhookConfiguration", Name: "isolator", Webhooks: []WebhookFacts{{Name: "pods.isolator.dev", CABundle: mutBundle, ServerName: svcName, Target: target}}},
			{Kind: "ValidatingWebhookConfiguration", Name: "isolator", Webhooks: []WebhookFacts{{Name: "policies.isolator.dev", CABundle: valBundle, ServerName: svcName, Target: target}}},
		}
	}
	certificate := func(ready cmmeta.ConditionStatus, reason, msg string) *cmapi.Certificate {
		leaf := fixtureCert(t, "leaf.crt")
		return &cmapi.Certificate{
			ObjectMeta: metav1.ObjectMeta{Name: "isolator-webhook", Namespace: "isolator-system"},
			Spec:       cmapi.CertificateSpec{SecretName: SecretName, IssuerRef: cmmeta.IssuerReference{Name: "isolator-ca", Kind: "Issuer"}},
			Status: cmapi.CertificateStatus{
				Conditions:  []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: ready, Reason: reason, Message: msg}},
				NotAfter:    &metav1.Time{Time: leaf.NotAfter},
				RenewalTime: &metav1.Time{Time: RenewAt(leaf)},
			},
		}
	}
	served := []*x509.Certificate{fixtureCert(t, "leaf.crt")}
	const via = "service isolator-system/isolator-webhook through the apiserver proxy (/serving-certificate)"
	// A self-managed Secret in the middle of a CA rotation: a Next CA and two reports.
	selfSecret := secretWith("leaf", map[string]string{AnnotationMode: ModeSelf})
	selfSecret.Data[SignerCertKey], selfSecret.Data[SignerKeyKey] = ca, fixture(t, "ca.key")
	selfSecret.Data[NextCertKey], selfSecret.Data[NextKeyKey] = other, fixture(t, "other-ca.key")
	selfSecret.Data[corev1.ServiceAccountRootCAKey] = append(append([]byte{}, ca...), other...)
	leafSerial := Serial(fixtureCert(t, "leaf.crt"))

	tests := []struct {
		name     string
		facts    Facts
		healthy  bool
		statuses []Status
	}{
		{"cert-manager-healthy", Facts{
			Mode: ModeCertManager, Certificate: certificate(cmmeta.ConditionTrue, "Ready", "Certificate is up to date and has not expired"),
			Secret: secretWith("leaf", nil), Configurations: configs(ca, ca), Served: served, ServedFrom: via,
		}, true, []Status{StatusOK, StatusOK, StatusOK, StatusOK, StatusOK}},
		{"cert-manager-not-ready-no-bundle", Facts{
			Mode: ModeCertManager, Certificate: certificate(cmmeta.ConditionFalse, "DoesNotExist", "Issuing certificate as Secret does not exist"),
			Secret: secretWith("leaf", nil), Configurations: configs(ca, nil), Served: served, ServedFrom: via,
		}, false, []Status{StatusFail, StatusOK, StatusOK, StatusFail, StatusOK}},
		{"cert-manager-no-certificate-no-secret", Facts{
			Mode: ModeCertManager, CertificateProblem: "cert-manager's CRDs are not installed", SecretProblem: "not found",
			Configurations: configs(ca, ca), ServedProblem: "GET /serving-certificate through the service proxy: no endpoints available for service \"isolator-webhook\"", ServedFrom: via,
		}, false, []Status{StatusFail, StatusFail, StatusOK, StatusOK, StatusFail}},
		{"expired-leaf-foreign-bundle", Facts{
			Mode: ModeCertManager, Certificate: certificate(cmmeta.ConditionTrue, "Ready", "ok"),
			Secret: secretWith("expired", nil), Configurations: configs(other, ca), Served: []*x509.Certificate{fixtureCert(t, "expired.crt")}, ServedFrom: via,
		}, false, []Status{StatusOK, StatusFail, StatusFail, StatusOK, StatusFail}},
		{"served-foreign-certificate", Facts{
			Mode: ModeCertManager, Certificate: certificate(cmmeta.ConditionTrue, "Ready", "ok"),
			Secret: secretWith("leaf", nil), Configurations: configs(ca, ca), Served: []*x509.Certificate{fixtureCert(t, "foreign.crt")}, ServedFrom: via,
		}, false, []Status{StatusOK, StatusOK, StatusOK, StatusOK, StatusFail}},
		{"self-rotation-in-progress", Facts{
			Mode: ModeSelf, Secret: selfSecret,
			Configurations: configs(selfSecret.Data[corev1.ServiceAccountRootCAKey], selfSecret.Data[corev1.ServiceAccountRootCAKey]),
			Replicas: []Replica{
				{Identity: "isolator-webhook-7d9f-abc12", Serial: leafSerial, Expires: checkNow.Add(time.Minute)},
				{Identity: "isolator-webhook-7d9f-def34", Serial: "1234", Expires: checkNow.Add(time.Minute)},
				{Identity: "dead-replica", Serial: "5678", Expires: checkNow.Add(-time.Minute)},
			},
			Served: served, ServedFrom: "https://127.0.0.1:9443 (TLS handshake)",
		}, true, []Status{StatusOK, StatusOK, StatusWarn, StatusOK, StatusOK, StatusOK}},
		{"self-reports-unreadable", Facts{
			Mode: ModeSelf, Secret: secretWith("leaf", map[string]string{AnnotationMode: ModeSelf}), Configurations: configs(ca, ca),
			ReplicasProblem: `leases.coordination.k8s.io is forbidden: User "alice" cannot list resource "leases"`,
			Served:          served, ServedFrom: via,
		}, true, []Status{StatusOK, StatusWarn, StatusOK, StatusOK, StatusOK}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.facts.Namespace, tt.facts.Now = "isolator-system", checkNow
			items := Diagnose(tt.facts)
			var got []Status
			for _, it := range items {
				got = append(got, it.Status)
			}
			if !slices.Equal(got, tt.statuses) {
				t.Errorf("statuses = %v, want %v", got, tt.statuses)
			}
			if Healthy(items) != tt.healthy {
				t.Errorf("healthy = %v, want %v", Healthy(items), tt.healthy)
			}
			assertGolden(t, tt.name, Render(items))
		})
	}
}

func TestVerifyServing(t *testing.T) {
	ca, other := fixture(t, "ca.crt"), fixture(t, "other-ca.crt")
	leaf := fixtureCert(t, "leaf.crt")
	tests := []struct {
		name       string
		bundle     []byte
		chain      []*x509.Certificate
		serverName string
		now        time.Time
		wantErr    string
	}{
		{"trusted for the Service name", ca, []*x509.Certificate{leaf}, "isolator-webhook.isolator-system.svc", checkNow, ""},
		{"a bundle with two CAs trusts either", append(append([]byte{}, other...), ca...), []*x509.Certificate{leaf}, "isolator-webhook.isolator-system.svc", checkNow, ""},
		{"another CA", other, []*x509.Certificate{leaf}, "isolator-webhook.isolator-system.svc", checkNow, "certificate signed by unknown authority"},
		{"another name", ca, []*x509.Certificate{leaf}, "127.0.0.1", checkNow, "doesn't contain any IP SANs"},
		{"expired", ca, []*x509.Certificate{fixtureCert(t, "expired.crt")}, "isolator-webhook.isolator-system.svc", checkNow, "certificate has expired"},
		{"empty bundle", nil, []*x509.Certificate{leaf}, "isolator-webhook.isolator-system.svc", checkNow, "caBundle: no PEM certificate found"},
		{"garbage bundle", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []*x509.Certificate{leaf}, "x", checkNow, "caBundle: certificate 1 of the bundle"},
		{"nothing presented", ca, nil, "x", checkNow, "no certificate presented"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := VerifyServing(tt.bundle, tt.chain, tt.serverName, tt.now)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRender(t *testing.T) {
	items := []Item{
		{Status: StatusOK, Title: "fine", Details: []string{"a detail"}, Fix: "not shown for OK"},
		{Status: StatusWarn, Title: "worth a look", Fix: "look"},
		{Status: StatusFail, Title: "broken", Details: []string{"why", "and more"}, Fix: "repair it"},
	}
	assertGolden(t, "render", Render(items))
}
