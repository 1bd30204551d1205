//go:build e2e

package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/certs"
	"github.com/isolator-dev/isolator/e2e/harness"
)

// selfArgs are the self-managed flags with test-sized delays: a new CA waits 2s in the
// caBundle before it signs, and a replica's report counts for 6s.
var selfArgs = []string{"--cert-propagation-delay=2s", "--cert-report-ttl=6s"}

// TestSelfManagedEndToEnd: with --cert-mode=self and webhook configurations registered
// without a caBundle, the webhook creates its CA and serving certificate, injects the
// caBundle, and the apiserver then calls it over TLS verified by that bundle.
func TestSelfManagedEndToEnd(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	cleanCertObjects(ctx)
	t.Cleanup(func() { cleanCertObjects(context.Background()) })
	targets := namespaces(t, ctx, "self-e2e")

	// Listening on every address lets the apiserver's service proxy reach it too.
	iso := startIsolator(t, ctx, harness.IsolatorOptions{Name: "self-e2e", SelfManagedCerts: true, NoWait: true, Args: append([]string{"--host="}, selfArgs...)})
	registerWebhooks(t, ctx, iso.URL, nil)
	waitReady(t, ctx, iso)
	bundle := waitInjected(t, ctx)

	s, err := secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != corev1.SecretTypeTLS || s.Annotations[certs.AnnotationMode] != certs.ModeSelf {
		t.Errorf("Secret type %q, mode annotation %q; want kubernetes.io/tls, self", s.Type, s.Annotations[certs.AnnotationMode])
	}
	leaf, err := certs.ParseKeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatalf("Secret key pair: %v", err)
	}
	if leaf.Key.Curve != elliptic.P256() {
		t.Errorf("serving key curve %s, want P-256", leaf.Key.Curve.Params().Name)
	}
	if pub, ok := leaf.Cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("serving certificate key %T, want ECDSA P-256", leaf.Cert.PublicKey)
	}
	for _, name := range []string{"isolator-webhook.isolator-system.svc", "127.0.0.1", "localhost"} {
		if err := leaf.Cert.VerifyHostname(name); err != nil {
			t.Errorf("serving certificate: %v", err)
		}
	}
	if err := certs.VerifyServing(bundle, []*x509.Certificate{leaf.Cert}, "127.0.0.1", time.Now()); err != nil {
		t.Errorf("the injected caBundle does not trust the Secret's certificate: %v", err)
	}
	assertOnlyCABundlePatched(t, ctx)
	served, err := servedLeaf(ctx, hostPort(iso.URL))
	if err != nil {
		t.Fatal(err)
	}
	if !served.Equal(leaf.Cert) {
		t.Errorf("the webhook serves serial %s, the Secret holds %s", certs.Serial(served), certs.Serial(leaf.Cert))
	}

	// The apiserver calls the webhook through the injected bundle: each pod gets the
	// class the example policy decides (failurePolicy Ignore would leave it unset).
	for _, tg := range targets {
		for range 5 {
			if err := createPod(ctx, tg); err != nil {
				t.Error(err)
			}
		}
	}

	out, code, err := isolatorCLI(ctx, "certs", "check", "--kubeconfig", cp.Kubeconfig(), "--webhook-url", iso.URL)
	if err != nil || code != 0 {
		t.Errorf("isolator certs check: exit %d, %v\n%s", code, err, out)
	}
	for _, want := range []string{"(mode self)", "[OK  ] Secret isolator-system/isolator-webhook-tls holds the serving key pair",
		"[OK  ] 1 replica(s) report serving the Secret's certificate", "[OK  ] MutatingWebhookConfiguration isolator webhook pods.isolator.dev: caBundle trusts",
		"[OK  ] ValidatingWebhookConfiguration isolator webhook policies.isolator.dev: caBundle trusts", "[OK  ] the webhook serves a certificate every caBundle trusts"} {
		if !strings.Contains(out, want) {
			t.Errorf("certs check output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("isolator certs check:\n%s", out)

	// Without --webhook-url, certs check reads the served certificate through the
	// apiserver's service proxy, as it does in a cluster.
	t.Run("through the service proxy", func(t *testing.T) {
		exposeAsService(t, ctx, iso)
		out, code, err := isolatorCLI(ctx, "certs", "check", "--kubeconfig", cp.Kubeconfig())
		if err != nil || code != 0 {
			t.Errorf("isolator certs check: exit %d, %v\n%s", code, err, out)
		}
		for _, want := range []string{"read from service isolator-system/isolator-webhook through the apiserver proxy (/serving-certificate)",
			"[OK  ] the webhook serves a certificate every caBundle trusts", "serving serial " + certs.Serial(leaf.Cert)} {
			if !strings.Contains(out, want) {
				t.Errorf("certs check output lacks %q:\n%s", want, out)
			}
		}
	})

	text, err := iso.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(text, `isolator_certs_expiry_timestamp_seconds{cert="leaf"}`); !ok || int64(v) != leaf.Cert.NotAfter.Unix() {
		t.Errorf("leaf expiry metric = %v (found %v), want %d", v, ok, leaf.Cert.NotAfter.Unix())
	}
	ca, _ := certs.ParseCertificates(bundle)
	if v, ok := metricValue(text, `isolator_certs_expiry_timestamp_seconds{cert="ca"}`); !ok || len(ca) != 1 || int64(v) != ca[0].NotAfter.Unix() {
		t.Errorf("CA expiry metric = %v (found %v), want the bundle's only CA", v, ok)
	}

	// A configuration recreated without a caBundle gets it back.
	if err := cp.Client().AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, certs.WebhookConfigurationName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cp.Client().AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, certs.WebhookConfigurationName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	registerWebhooks(t, ctx, iso.URL, nil)
	if again := waitInjected(t, ctx); !bytes.Equal(again, bundle) {
		t.Error("re-injected a different bundle")
	}
}

// TestRotationsUnderLoad: two replicas (leader election on) behind a round-robin relay;
// a forced leaf rotation, then a forced CA rotation, each while pods are created without
// pause. Every admission must succeed with the pod's decided class, and every fresh
// handshake with either replica must verify against the configured caBundle.
func TestRotationsUnderLoad(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t, 6*time.Minute)
	cleanCertObjects(ctx)
	t.Cleanup(func() { cleanCertObjects(context.Background()) })
	targets := namespaces(t, ctx, "rotation")

	args := append([]string{"--leader-elect=true"}, selfArgs...)
	a := startIsolator(t, ctx, harness.IsolatorOptions{Name: "replica-a", SelfManagedCerts: true, NoWait: true, Args: args})
	b := startIsolator(t, ctx, harness.IsolatorOptions{Name: "replica-b", SelfManagedCerts: true, NoWait: true, Args: args})
	addr := startRelay(t, hostPort(a.URL), hostPort(b.URL))
	registerWebhooks(t, ctx, "https://"+addr, nil)
	waitReady(t, ctx, a)
	waitReady(t, ctx, b)
	bundle0 := waitInjected(t, ctx)
	s0, err := secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Both replicas serve the Secret's certificate before the load starts.
	waitServing(t, ctx, s0.Data[corev1.TLSCertKey], a, b)

	rotate := func(what string, args ...string) {
		t.Helper()
		mon := startMonitor(t, ctx, 2*time.Second)
		l := startLoad(ctx, targets, 6)
		p := startProber(ctx, hostPort(a.URL), hostPort(b.URL))
		time.Sleep(3 * time.Second)
		cmd := append([]string{"certs", "rotate", "--kubeconfig", cp.Kubeconfig(), "--wait", "--timeout", "2m"}, args...)
		out, code, err := isolatorCLI(ctx, cmd...)
		t.Logf("isolator %s:\n%s", strings.Join(cmd, " "), out)
		if err != nil || code != 0 {
			t.Errorf("%s: exit %d, %v", strings.Join(cmd, " "), code, err)
		}
		// Keep the load on while the replicas settle on the new certificate.
		time.Sleep(3 * time.Second)
		l.stop()
		p.stop()
		mon.stop()
		l.check(t, what)
		p.check(t, what)
		mon.check(t, what)
	}

	rotate("leaf rotation")
	s1, err := secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(s1.Data[corev1.TLSCertKey], s0.Data[corev1.TLSCertKey]) {
		t.Error("the leaf rotation left the serving certificate unchanged")
	}
	if !bytes.Equal(s1.Data[corev1.ServiceAccountRootCAKey], bundle0) {
		t.Error("the leaf rotation changed the CA bundle")
	}
	waitServing(t, ctx, s1.Data[corev1.TLSCertKey], a, b)

	rotate("CA rotation", "--ca")
	s2, err := secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cas, err := certs.ParseCertificates(s2.Data[corev1.ServiceAccountRootCAKey])
	if err != nil {
		t.Fatal(err)
	}
	old, _ := certs.ParseCertificates(bundle0)
	if len(cas) != 1 || cas[0].Equal(old[0]) {
		t.Errorf("after the CA rotation the bundle holds %d CAs (old one kept: %v), want only the new CA", len(cas), len(cas) > 0 && cas[0].Equal(old[0]))
	}
	if got := waitInjected(t, ctx); !bytes.Equal(got, s2.Data[corev1.ServiceAccountRootCAKey]) {
		t.Error("the configurations do not hold the Secret's bundle")
	}
	waitServing(t, ctx, s2.Data[corev1.TLSCertKey], a, b)

	// One leader did the writing: 2 leaf rotations (forced, and the new CA's first
	// certificate) and 1 CA rotation over both replicas.
	var leafRot, caRot float64
	for _, iso := range []*harness.Isolator{a, b} {
		text, err := iso.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		l, _ := metricValue(text, `isolator_certs_rotations_total{kind="leaf"}`)
		c, _ := metricValue(text, `isolator_certs_rotations_total{kind="ca"}`)
		leafRot, caRot = leafRot+l, caRot+c
		// The relay spread the apiserver's connections: both replicas decided pods.
		decided := metricSum(text, "isolator_admission_decisions_total")
		t.Logf("%s decided %v pods", iso.Name(), decided)
		if decided == 0 {
			t.Errorf("%s decided no pod: the load did not reach both replicas", iso.Name())
		}
	}
	if leafRot != 2 || caRot != 1 {
		t.Errorf("isolator_certs_rotations_total over both replicas: leaf %v, ca %v; want 2 and 1", leafRot, caRot)
	}
}

// waitServing waits until every replica presents certPEM in a fresh handshake.
func waitServing(t *testing.T, ctx context.Context, certPEM []byte, isos ...*harness.Isolator) {
	t.Helper()
	want, err := certs.ParseCertificates(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, iso := range isos {
		err := harness.WaitFor(ctx, 30*time.Second, iso.Name()+" serving serial "+certs.Serial(want[0]), func(ctx context.Context) (bool, error) {
			got, err := servedLeaf(ctx, hostPort(iso.URL))
			return err == nil && got.Equal(want[0]), err
		})
		if err != nil {
			t.Error(err)
		}
	}
}

// TestCARotationSurvivesLeaderLoss: the leader is killed (SIGKILL: no lease released, no
// report withdrawn) right after it brought a new CA into the bundle. The other replica
// takes over leadership, finishes the rotation from the state kept in the Secret, and
// the dead replica's report, stuck on the old CA, stops holding the rotation back once
// it expires.
func TestCARotationSurvivesLeaderLoss(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t, 4*time.Minute)
	cleanCertObjects(ctx)
	t.Cleanup(func() { cleanCertObjects(context.Background()) })
	targets := namespaces(t, ctx, "failover")

	args := []string{"--leader-elect=true", "--cert-propagation-delay=5s", "--cert-report-ttl=6s"}
	a := startIsolator(t, ctx, harness.IsolatorOptions{Name: "failover-a", SelfManagedCerts: true, NoWait: true, Args: args})
	b := startIsolator(t, ctx, harness.IsolatorOptions{Name: "failover-b", SelfManagedCerts: true, NoWait: true, Args: args})
	addr := startRelay(t, hostPort(a.URL), hostPort(b.URL))
	registerWebhooks(t, ctx, "https://"+addr, nil)
	waitReady(t, ctx, a)
	waitReady(t, ctx, b)
	bundle0 := waitInjected(t, ctx)

	var leader, survivor *harness.Isolator
	err := harness.WaitFor(ctx, time.Minute, "a leader", func(ctx context.Context) (bool, error) {
		for _, iso := range []*harness.Isolator{a, b} {
			text, err := iso.Metrics(ctx)
			if err != nil {
				return false, err
			}
			if v, _ := metricValue(text, `leader_election_master_status{name="isolator-webhook"}`); v == 1 {
				leader = iso
			}
		}
		return leader != nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	survivor = a
	if leader == a {
		survivor = b
	}

	if out, code, err := isolatorCLI(ctx, "certs", "rotate", "--kubeconfig", cp.Kubeconfig(), "--ca"); err != nil || code != 0 {
		t.Fatalf("certs rotate --ca: exit %d, %v\n%s", code, err, out)
	}
	err = harness.WaitFor(ctx, 30*time.Second, "the new CA in the Secret", func(ctx context.Context) (bool, error) {
		s, err := secret(ctx)
		return err == nil && len(s.Data[certs.NextCertKey]) > 0, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(leader.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	t.Logf("killed the leader %s while the new CA waited for the propagation delay", leader.Name())

	old, _ := certs.ParseCertificates(bundle0)
	err = harness.WaitFor(ctx, 2*time.Minute, "the rotation to complete under the new leader", func(ctx context.Context) (bool, error) {
		s, err := secret(ctx)
		if err != nil {
			return false, err
		}
		m, _ := certs.ParseMaterial(s)
		return m.Next == nil && m.Signer != nil && !m.Signer.Cert.Equal(old[0]) && len(m.Bundle) == 1, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rotation completed %s after the leader died", time.Since(killed).Round(time.Second))
	s, err := secret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := waitInjected(t, ctx); !bytes.Equal(got, s.Data[corev1.ServiceAccountRootCAKey]) {
		t.Error("the configurations do not hold the new bundle")
	}
	waitServing(t, ctx, s.Data[corev1.TLSCertKey], survivor)
	text, err := survivor.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := metricValue(text, `isolator_certs_rotations_total{kind="ca"}`); v != 1 {
		t.Errorf("the new leader counted %v CA rotations, want 1", v)
	}
	for _, tg := range targets {
		if err := createPod(ctx, tg); err != nil {
			t.Error(err)
		}
	}
}

// assertOnlyCABundlePatched checks, from the apiserver's field ownership records, that
// the webhook wrote nothing in its webhook configurations but caBundle.
func assertOnlyCABundlePatched(t *testing.T, ctx context.Context) {
	t.Helper()
	api := cp.Client().AdmissionregistrationV1()
	m, err := api.MutatingWebhookConfigurations().Get(ctx, certs.WebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := api.ValidatingWebhookConfigurations().Get(ctx, certs.WebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range []metav1.Object{m, v} {
		found := false
		for _, mf := range obj.GetManagedFields() {
			if !strings.HasPrefix(mf.Manager, "isolator") || mf.FieldsV1 == nil {
				continue
			}
			found = true
			var fields map[string]any
			if err := json.Unmarshal(mf.FieldsV1.GetRawBytes(), &fields); err != nil {
				t.Fatal(err)
			}
			paths := leafPaths("", fields)
			for _, path := range paths {
				if !strings.HasSuffix(path, "/f:clientConfig/f:caBundle") {
					t.Errorf("%s: the webhook (%s) owns %s, want only caBundle fields", obj.GetName(), mf.Manager, path)
				}
			}
			if len(paths) == 0 {
				t.Errorf("%s: the webhook's (%s) field record is empty", obj.GetName(), mf.Manager)
			}
			t.Logf("%s: fields owned by %s: %v", obj.GetName(), mf.Manager, paths)
		}
		if !found {
			t.Errorf("%s: no field of it is owned by the webhook; who injected the caBundle?", obj.GetName())
		}
	}
}

// leafPaths lists the paths of a managedFields FieldsV1 tree that own a value.
func leafPaths(prefix string, fields map[string]any) []string {
	var out []string
	for k, sub := range fields {
		if k == "." {
			continue
		}
		child, ok := sub.(map[string]any)
		if !ok || len(child) == 0 {
			out = append(out, prefix+"/"+k)
			continue
		}
		out = append(out, leafPaths(prefix+"/"+k, child)...)
	}
	return out
}
