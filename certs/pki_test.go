package certs

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestIssueServing(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test-ca", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	dns, ips := ServingNames("isolator-webhook", "ns", []string{"127.0.0.1", "localhost", "isolator-webhook"})
	tests := []struct {
		name      string
		lifetime  time.Duration
		wantAfter time.Time
	}{
		{"within the CA's lifetime", 10 * time.Minute, now.Add(10 * time.Minute)},
		{"cut short at the CA's expiry", 3 * time.Hour, ca.Cert.NotAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp, err := IssueServing(ca, dns, ips, tt.lifetime, now)
			if err != nil {
				t.Fatal(err)
			}
			c := kp.Cert
			if !c.NotAfter.Equal(tt.wantAfter.Truncate(time.Second)) {
				t.Errorf("NotAfter = %s, want %s", c.NotAfter, tt.wantAfter)
			}
			if c.IsCA || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA %v, ExtKeyUsage %v, KeyUsage %v: want a server certificate", c.IsCA, c.ExtKeyUsage, c.KeyUsage)
			}
			if !slices.Equal(c.AuthorityKeyId, ca.Cert.SubjectKeyId) || len(ca.Cert.SubjectKeyId) == 0 {
				t.Error("the leaf's AuthorityKeyId must be the CA's SubjectKeyId (replicas report it)")
			}
			if c.Subject.CommonName != dns[0] {
				t.Errorf("CommonName %q, want %q", c.Subject.CommonName, dns[0])
			}
			back, err := ParseKeyPair(kp.CertPEM, kp.KeyPEM)
			if err != nil || !back.Cert.Equal(c) || !back.Key.Equal(kp.Key) {
				t.Errorf("PEM round trip: %v", err)
			}
		})
	}
	if _, err := IssueServing(ca, nil, nil, time.Hour, now); err == nil {
		t.Error("a certificate without names must be refused")
	}
	if _, err := IssueServing(&KeyPair{Cert: ca.Cert}, dns, nil, time.Hour, now); err == nil {
		t.Error("issuing without the CA key must be refused")
	}
	if _, err := NewCA("x", 0, now); err == nil {
		t.Error("a CA without lifetime must be refused")
	}
}

func TestServingNames(t *testing.T) {
	dns, ips := ServingNames("isolator-webhook", "isolator-system", []string{"127.0.0.1", "localhost", "::1", "isolator-webhook"})
	wantDNS := []string{"isolator-webhook.isolator-system.svc", "isolator-webhook.isolator-system.svc.cluster.local",
		"isolator-webhook.isolator-system", "isolator-webhook", "localhost"}
	if !slices.Equal(dns, wantDNS) {
		t.Errorf("DNS names %v, want %v", dns, wantDNS)
	}
	if len(ips) != 2 || !ips[0].Equal(net.ParseIP("127.0.0.1")) || !ips[1].Equal(net.ParseIP("::1")) {
		t.Errorf("IPs %v, want [127.0.0.1 ::1]", ips)
	}
}

func TestParseCertificates(t *testing.T) {
	ca := fixture(t, "ca.crt")
	tests := []struct {
		name    string
		in      []byte
		want    int
		wantErr string
	}{
		{"one", ca, 1, ""},
		{"two", append(append([]byte{}, ca...), fixture(t, "other-ca.crt")...), 2, ""},
		{"empty", nil, 0, "no PEM certificate found"},
		{"a key is not a certificate", fixture(t, "ca.key"), 0, `unexpected PEM block "EC PRIVATE KEY"`},
		{"trailing garbage", append(append([]byte{}, ca...), "garbage"...), 0, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCertificates(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(got) != tt.want {
				t.Errorf("got %d certificates, %v; want %d", len(got), err, tt.want)
			}
			if !strings.EqualFold(string(EncodeCertificates(got)), string(tt.in)) {
				t.Error("EncodeCertificates does not give the input back")
			}
		})
	}
}

func TestBundlePatch(t *testing.T) {
	b := []byte("bundle")
	ops := bundlePatch([]string{"a.isolator.dev", "b.isolator.dev", "c.isolator.dev"}, [][]byte{b, nil, []byte("old")}, b)
	got, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"op":"test","path":"/webhooks/1/name","value":"b.isolator.dev"},{"op":"add","path":"/webhooks/1/clientConfig/caBundle","value":"YnVuZGxl"},` +
		`{"op":"test","path":"/webhooks/2/name","value":"c.isolator.dev"},{"op":"add","path":"/webhooks/2/clientConfig/caBundle","value":"YnVuZGxl"}]`
	if string(got) != want {
		t.Errorf("patch\n%s\nwant\n%s", got, want)
	}
	if ops := bundlePatch([]string{"a"}, [][]byte{b}, b); ops != nil {
		t.Errorf("nothing to change must give no patch, got %v", ops)
	}
}

func TestNewIdentity(t *testing.T) {
	name := regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)
	for _, host := range []string{"isolator-webhook-7d9f5-x2x", "My_Laptop.local", "", "---", strings.Repeat("a", 300)} {
		id := NewIdentity(host)
		lease := ReportLeaseName(id)
		if !name.MatchString(lease) || len(lease) > 253 {
			t.Errorf("NewIdentity(%q) = %q: lease name %q is not a valid object name", host, id, lease)
		}
		if NewIdentity(host) == id {
			t.Errorf("two replicas on host %q got the same identity", host)
		}
	}
}

// writeVolume writes files the way the kubelet updates a Secret volume: a new hidden
// timestamped directory, then one rename of the ..data symlink, with each file a symlink
// through ..data.
func writeVolume(t *testing.T, dir string, n int, files map[string][]byte) {
	t.Helper()
	ts := fmt.Sprintf("..2026_01_01_00_00_%02d.%d", n%60, n)
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, ts, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(ts, filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		if _, err := os.Lstat(filepath.Join(dir, name)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
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

// TestFileSourceFollowsSymlinkSwaps: handshakes during repeated kubelet-style swaps always
// get a certificate, and the last one written is served in the end.
func TestFileSourceFollowsSymlinkSwaps(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test-ca", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	issue := func() *KeyPair {
		kp, err := IssueServing(ca, []string{"isolator-webhook.isolator-system.svc"}, nil, 30*time.Minute, now)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	dir := t.TempDir()
	first := issue()
	writeVolume(t, dir, 0, map[string][]byte{CertFile: first.CertPEM, KeyFile: first.KeyPEM, CAFile: ca.CertPEM})

	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	src := NewFileSource(dir, logr.Discard())
	src.Interval = 50 * time.Millisecond
	src.Metrics = m
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !src.Loaded() {
		if time.Now().After(deadline) {
			t.Fatal("the first key pair was not loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := src.GetCertificate(nil); err != nil {
		t.Fatal(err)
	}

	var handshakes, failures atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			handshakes.Add(1)
			if c, err := src.GetCertificate(nil); err != nil || c == nil || len(c.Certificate) == 0 {
				failures.Add(1)
			}
		}
	}()
	var last *KeyPair
	for i := 1; i <= 20; i++ {
		last = issue()
		writeVolume(t, dir, i, map[string][]byte{CertFile: last.CertPEM, KeyFile: last.KeyPEM, CAFile: ca.CertPEM})
		time.Sleep(20 * time.Millisecond)
	}
	for {
		chain := src.Serving()
		if len(chain) > 0 && chain[0].Equal(last.Cert) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the last key pair written is not served")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(stop)
	if failures.Load() > 0 {
		t.Errorf("%d of %d certificate lookups failed during the swaps", failures.Load(), handshakes.Load())
	}
	waitFor(t, func() bool {
		return testutil.ToFloat64(m.Expiry.WithLabelValues("leaf")) == float64(last.Cert.NotAfter.Unix())
	}, "the leaf expiry metric to follow the last key pair")
	if got := testutil.ToFloat64(m.Expiry.WithLabelValues("ca")); got != float64(ca.Cert.NotAfter.Unix()) {
		t.Errorf("CA expiry metric %v, want %d", got, ca.Cert.NotAfter.Unix())
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Start: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
