//go:build e2e

package certs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/isolator-dev/isolator/certs"
	"github.com/isolator-dev/isolator/e2e/harness"
)

// installCertManagerCRDs applies the CRDs that ship in the cert-manager module isolator
// builds against (deploy/crds/), and waits until they are served.
func installCertManagerCRDs(t *testing.T, ctx context.Context) {
	t.Helper()
	out, err := exec.CommandContext(ctx, "go", "mod", "download", "-json", "github.com/cert-manager/cert-manager").Output()
	if err != nil {
		t.Fatalf("locating the cert-manager module: %v", err)
	}
	var mod struct{ Dir, Version string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download -json: %v (%s)", err, out)
	}
	crds := filepath.Join(mod.Dir, "deploy", "crds")
	if out, err := cp.Kubectl(ctx, nil, "apply", "--server-side", "-f", crds); err != nil {
		t.Fatalf("installing cert-manager %s CRDs: %v\n%s", mod.Version, err, out)
	}
	if out, err := cp.Kubectl(ctx, nil, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/certificates.cert-manager.io", "crd/issuers.cert-manager.io"); err != nil {
		t.Fatalf("waiting for the cert-manager CRDs: %v\n%s", err, out)
	}
	t.Logf("installed cert-manager %s CRDs from %s", mod.Version, crds)
}

func certManagerClient(t *testing.T) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := cmapi.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cp.RESTConfig(), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCertsCheckCertManager: `isolator certs check` against the real apiserver with
// cert-manager's CRDs: a healthy chain passes, and each way the chain breaks fails with
// the item that says so.
func TestCertsCheckCertManager(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t, 4*time.Minute)
	cleanCertObjects(ctx)
	t.Cleanup(func() { cleanCertObjects(context.Background()) })
	installCertManagerCRDs(t, ctx)
	c := certManagerClient(t)

	ca := newCA(t, "isolator-ca")
	leaf := servingPair(t, ca, 12*time.Hour, time.Now())
	dir := t.TempDir()
	secretVolume(t, dir, tlsFiles(leaf, ca))

	// What cert-manager would have made: the Certificate (Ready), and its Secret.
	cert := &cmapi.Certificate{
		ObjectMeta: metav1.ObjectMeta{Name: "isolator-webhook", Namespace: harness.IsolatorNamespace},
		Spec: cmapi.CertificateSpec{
			SecretName: certs.SecretName,
			DNSNames:   leaf.Cert.DNSNames,
			IssuerRef:  cmmeta.IssuerReference{Name: "isolator-ca", Kind: "Issuer", Group: "cert-manager.io"},
		},
	}
	if err := c.Create(ctx, cert); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), cert) })
	setReady := func(status cmmeta.ConditionStatus, reason, msg string) {
		t.Helper()
		cur := &cmapi.Certificate{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(cert), cur); err != nil {
			t.Fatal(err)
		}
		cur.Status.Conditions = []cmapi.CertificateCondition{{Type: cmapi.CertificateConditionReady, Status: status, Reason: reason, Message: msg,
			LastTransitionTime: ptrTime(metav1.Now())}}
		cur.Status.NotBefore, cur.Status.NotAfter = ptrTime(metav1.NewTime(leaf.Cert.NotBefore)), ptrTime(metav1.NewTime(leaf.Cert.NotAfter))
		cur.Status.RenewalTime = ptrTime(metav1.NewTime(certs.RenewAt(leaf.Cert)))
		if err := c.Status().Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
	}
	setReady(cmmeta.ConditionTrue, "Ready", "Certificate is up to date and has not expired")
	writeSecret := func(kp *certs.KeyPair) {
		t.Helper()
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: certs.SecretName, Namespace: harness.IsolatorNamespace,
				Annotations: map[string]string{"cert-manager.io/certificate-name": cert.Name, "cert-manager.io/issuer-name": "isolator-ca"}},
			Type: corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: kp.CertPEM, corev1.TLSPrivateKeyKey: kp.KeyPEM, corev1.ServiceAccountRootCAKey: ca.CertPEM},
		}
		_ = c.Delete(ctx, s)
		if err := c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	writeSecret(leaf)

	iso := startIsolator(t, ctx, harness.IsolatorOptions{Name: "check", CertDir: dir, NoWait: true})
	registerWebhooks(t, ctx, iso.URL, ca.CertPEM)
	waitReady(t, ctx, iso)

	check := func(t *testing.T, wantExit int, want ...string) {
		t.Helper()
		out, code, err := isolatorCLI(ctx, "certs", "check", "--kubeconfig", cp.Kubeconfig(), "--webhook-url", iso.URL)
		if err != nil {
			t.Fatal(err)
		}
		if code != wantExit {
			t.Errorf("exit %d, want %d", code, wantExit)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("output lacks %q", w)
			}
		}
		if t.Failed() {
			t.Logf("isolator certs check:\n%s", out)
		}
	}

	t.Run("healthy", func(t *testing.T) {
		check(t, 0, "(mode cert-manager)",
			"[OK  ] Certificate isolator-system/isolator-webhook is Ready",
			"issuer Issuer isolator-ca",
			"[OK  ] Secret isolator-system/isolator-webhook-tls holds the serving key pair",
			"serving certificate serial "+certs.Serial(leaf.Cert)+", expires "+leaf.Cert.NotAfter.UTC().Format(time.RFC3339),
			"[OK  ] MutatingWebhookConfiguration isolator webhook pods.isolator.dev: caBundle trusts the Secret's certificate",
			"[OK  ] ValidatingWebhookConfiguration isolator webhook policies.isolator.dev: caBundle trusts the Secret's certificate",
			"[OK  ] the webhook serves a certificate every caBundle trusts")
	})

	other := newCA(t, "another-ca")
	patchBundle := func(kind string, bundle []byte) {
		t.Helper()
		patch := []byte(fmt.Sprintf(`[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":%q}]`, base64.StdEncoding.EncodeToString(bundle)))
		var err error
		api := cp.Client().AdmissionregistrationV1()
		if kind == "mutating" {
			_, err = api.MutatingWebhookConfigurations().Patch(ctx, certs.WebhookConfigurationName, types.JSONPatchType, patch, metav1.PatchOptions{})
		} else {
			_, err = api.ValidatingWebhookConfigurations().Patch(ctx, certs.WebhookConfigurationName, types.JSONPatchType, patch, metav1.PatchOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	expired, err := certs.IssueServing(ca, leaf.Cert.DNSNames, leaf.Cert.IPAddresses, time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	foreign := servingPair(t, other, 12*time.Hour, time.Now())
	tests := []struct {
		name           string
		breakIt, fixIt func()
		want           []string
	}{
		{"Certificate not Ready",
			func() {
				setReady(cmmeta.ConditionFalse, "DoesNotExist", "Issuing certificate as Secret does not exist")
			},
			func() { setReady(cmmeta.ConditionTrue, "Ready", "Certificate is up to date and has not expired") },
			[]string{"[FAIL] Certificate isolator-system/isolator-webhook is not Ready", "Ready=False DoesNotExist: Issuing certificate as Secret does not exist"}},
		{"Secret missing",
			func() {
				_ = cp.Client().CoreV1().Secrets(harness.IsolatorNamespace).Delete(ctx, certs.SecretName, metav1.DeleteOptions{})
			},
			func() { writeSecret(leaf) },
			[]string{"[FAIL] Secret isolator-system/isolator-webhook-tls is missing"}},
		{"expired certificate in the Secret",
			func() { writeSecret(expired) },
			func() { writeSecret(leaf) },
			[]string{"[FAIL] Secret isolator-system/isolator-webhook-tls: the serving certificate has expired"}},
		{"no caBundle injected",
			func() { patchBundle("validating", nil) },
			func() { patchBundle("validating", ca.CertPEM) },
			[]string{"[FAIL] ValidatingWebhookConfiguration isolator webhook policies.isolator.dev has no caBundle", "cert-manager.io/inject-ca-from"}},
		{"caBundle of another CA",
			func() { patchBundle("mutating", other.CertPEM) },
			func() { patchBundle("mutating", ca.CertPEM) },
			[]string{"[FAIL] MutatingWebhookConfiguration isolator webhook pods.isolator.dev: caBundle does not trust the Secret's certificate",
				"[FAIL] the webhook serves a certificate that a caBundle does not trust"}},
		{"webhook serves a certificate the bundles do not trust",
			func() {
				secretVolume(t, dir, tlsFiles(foreign, other))
				waitServed(t, ctx, iso, foreign)
			},
			func() {
				secretVolume(t, dir, tlsFiles(leaf, ca))
				waitServed(t, ctx, iso, leaf)
			},
			[]string{"[FAIL] the webhook serves a certificate that a caBundle does not trust", "serving serial " + certs.Serial(foreign.Cert)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.breakIt()
			check(t, 1, tt.want...)
			tt.fixIt()
			check(t, 0, "[OK  ] the webhook serves a certificate every caBundle trusts")
		})
	}

	t.Run("a self-managed webhook leaves cert-manager's Secret alone", func(t *testing.T) {
		before, err := secret(ctx)
		if err != nil {
			t.Fatal(err)
		}
		self := startIsolator(t, ctx, harness.IsolatorOptions{Name: "self-vs-cert-manager", SelfManagedCerts: true, NoWait: true})
		err = harness.WaitFor(ctx, 30*time.Second, "the self-managed webhook to refuse the Secret", func(context.Context) (bool, error) {
			b, err := os.ReadFile(self.LogPath())
			return strings.Contains(string(b), "is written by cert-manager (Certificate isolator-webhook)"), err
		})
		if err != nil {
			t.Fatal(err)
		}
		after, err := secret(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if after.ResourceVersion != before.ResourceVersion {
			t.Error("the self-managed webhook changed cert-manager's Secret")
		}
		bundles, err := configuredBundles(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bundles {
			if string(b) != string(ca.CertPEM) {
				t.Error("the self-managed webhook changed a caBundle that cainjector owns")
			}
		}
	})
}

func waitServed(t *testing.T, ctx context.Context, iso *harness.Isolator, kp *certs.KeyPair) {
	t.Helper()
	err := harness.WaitFor(ctx, 30*time.Second, "the webhook serving serial "+certs.Serial(kp.Cert), func(ctx context.Context) (bool, error) {
		got, err := servedLeaf(ctx, hostPort(iso.URL))
		return err == nil && got.Equal(kp.Cert), err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func ptrTime(t metav1.Time) *metav1.Time { return &t }
