//go:build e2e

package certs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/isolator-dev/isolator/certs"
	"github.com/isolator-dev/isolator/e2e/harness"
)

// servingPair is a CA and a serving certificate for the webhook Service and 127.0.0.1,
// made with isolator's own PKI (what cert-manager would issue).
func servingPair(t *testing.T, ca *certs.KeyPair, lifetime time.Duration, now time.Time) *certs.KeyPair {
	t.Helper()
	dns, ips := certs.ServingNames(certs.ServiceName, harness.IsolatorNamespace, []string{"127.0.0.1", "localhost"})
	kp, err := certs.IssueServing(ca, dns, ips, lifetime, now)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

func newCA(t *testing.T, name string) *certs.KeyPair {
	t.Helper()
	ca, err := certs.NewCA(name, 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// secretVolume writes files the way the kubelet writes a Secret volume (AtomicWriter):
// the data in a fresh hidden timestamped directory, a ..data symlink to it swapped in with
// one rename, and each key a symlink to ..data/<key>. Earlier versions are removed.
func secretVolume(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	ts := filepath.Join(dir, fmt.Sprintf("..%s.%d", time.Now().Format("2006_01_02_15_04_05"), time.Now().UnixNano()))
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(ts, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

func tlsFiles(kp, ca *certs.KeyPair) map[string][]byte {
	return map[string][]byte{certs.CertFile: kp.CertPEM, certs.KeyFile: kp.KeyPEM, certs.CAFile: ca.CertPEM}
}

// TestFileRotationUnderLoad: in cert-manager mode the webhook serves the mounted Secret;
// when the kubelet swaps in a renewed certificate, the webhook serves it without a
// restart and without failing an admission.
func TestFileRotationUnderLoad(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t, 3*time.Minute)
	cleanCertObjects(ctx)
	t.Cleanup(func() { cleanCertObjects(context.Background()) })
	targets := namespaces(t, ctx, "files")

	ca := newCA(t, "cert-manager-ca")
	first := servingPair(t, ca, 12*time.Hour, time.Now())
	dir := t.TempDir()
	secretVolume(t, dir, tlsFiles(first, ca))
	iso := startIsolator(t, ctx, harness.IsolatorOptions{Name: "files", CertDir: dir, NoWait: true})
	registerWebhooks(t, ctx, iso.URL, ca.CertPEM)
	waitReady(t, ctx, iso)
	if got, err := servedLeaf(ctx, hostPort(iso.URL)); err != nil || !got.Equal(first.Cert) {
		t.Fatalf("before the swap the webhook should serve the first certificate (%v)", err)
	}

	l := startLoad(ctx, targets, 6)
	p := startProber(ctx, hostPort(iso.URL))
	time.Sleep(3 * time.Second)
	renewed := servingPair(t, ca, 12*time.Hour, time.Now())
	secretVolume(t, dir, tlsFiles(renewed, ca))
	swapped := time.Now()
	err := harness.WaitFor(ctx, 30*time.Second, "the webhook serving the renewed certificate", func(ctx context.Context) (bool, error) {
		got, err := servedLeaf(ctx, hostPort(iso.URL))
		return err == nil && got.Equal(renewed.Cert), err
	})
	t.Logf("the webhook served the renewed certificate %s after the ..data swap", time.Since(swapped).Round(time.Millisecond))
	time.Sleep(3 * time.Second)
	l.stop()
	p.stop()
	if err != nil {
		t.Fatal(err)
	}
	l.check(t, "file rotation")
	p.check(t, "file rotation")

	text, err := iso.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := metricValue(text, `isolator_certs_expiry_timestamp_seconds{cert="leaf"}`); !ok || int64(v) != renewed.Cert.NotAfter.Unix() {
		t.Errorf("leaf expiry metric = %v (found %v), want the renewed certificate's %d", v, ok, renewed.Cert.NotAfter.Unix())
	}
	if v, ok := metricValue(text, `isolator_certs_expiry_timestamp_seconds{cert="ca"}`); !ok || int64(v) != ca.Cert.NotAfter.Unix() {
		t.Errorf("CA expiry metric = %v (found %v), want %d", v, ok, ca.Cert.NotAfter.Unix())
	}
}
