package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWriteServingCerts(t *testing.T) {
	tests := []struct {
		name     string
		dnsNames []string
		ips      []net.IP
		wantCN   string
	}{
		{
			name:     "service names",
			dnsNames: []string{"isolator-webhook.isolator-system.svc", "isolator-webhook.isolator-system"},
			wantCN:   "isolator-webhook.isolator-system.svc",
		},
		{
			name:   "loopback address only",
			ips:    []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			wantCN: "localhost",
		},
		{
			name:     "names and address",
			dnsNames: []string{"localhost"},
			ips:      []net.IP{net.IPv4(127, 0, 0, 1)},
			wantCN:   "localhost",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "certs")
			ca, err := WriteServingCerts(dir, tt.dnsNames, tt.ips)
			if err != nil {
				t.Fatalf("WriteServingCerts: %v", err)
			}
			for _, name := range []string{TLSCertFile, TLSKeyFile, CACertFile} {
				info, err := os.Stat(filepath.Join(dir, name))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if perm := info.Mode().Perm(); perm != 0o600 {
					t.Errorf("%s mode = %v, want 0600", name, perm)
				}
			}
			entries, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 3 {
				t.Errorf("dir holds %d files, want only tls.crt, tls.key, ca.crt (no temporary leftovers)", len(entries))
			}

			caPEM := readFile(t, filepath.Join(dir, CACertFile))
			if string(caPEM) != string(ca.CertPEM) {
				t.Errorf("ca.crt differs from the returned CA")
			}
			pair, err := tls.LoadX509KeyPair(filepath.Join(dir, TLSCertFile), filepath.Join(dir, TLSKeyFile))
			if err != nil {
				t.Fatalf("tls.crt and tls.key do not form a key pair: %v", err)
			}
			leaf, err := x509.ParseCertificate(pair.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			key, ok := leaf.PublicKey.(*ecdsa.PublicKey)
			if !ok || key.Curve != elliptic.P256() {
				t.Errorf("leaf key is %T, want ECDSA P-256", leaf.PublicKey)
			}
			if leaf.Subject.CommonName != tt.wantCN {
				t.Errorf("CN = %q, want %q", leaf.Subject.CommonName, tt.wantCN)
			}
			if !slices.Equal(leaf.DNSNames, tt.dnsNames) {
				t.Errorf("DNSNames = %v, want %v", leaf.DNSNames, tt.dnsNames)
			}
			if len(leaf.IPAddresses) != len(tt.ips) {
				t.Errorf("IPAddresses = %v, want %v", leaf.IPAddresses, tt.ips)
			}
			if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("ExtKeyUsage = %v, want server auth only", leaf.ExtKeyUsage)
			}
			if leaf.IsCA {
				t.Errorf("serving certificate is a CA")
			}

			roots := x509.NewCertPool()
			if !roots.AppendCertsFromPEM(caPEM) {
				t.Fatal("ca.crt holds no certificate")
			}
			hosts := append([]string{}, tt.dnsNames...)
			for _, ip := range tt.ips {
				hosts = append(hosts, ip.String())
			}
			for _, host := range hosts {
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
					t.Errorf("verify for %s: %v", host, err)
				}
			}
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: roots}); err == nil {
				t.Errorf("certificate verifies for a name it was not issued for")
			}
		})
	}
}

func TestWriteServingCertsNeedsANameOrAddress(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	_, err := WriteServingCerts(dir, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "no DNS names and no IP addresses") {
		t.Fatalf("err = %v, want one that says a name or address is needed", err)
	}
	if _, statErr := os.Stat(dir); !os.IsNotExist(statErr) {
		t.Errorf("%s was created although nothing was issued", dir)
	}
}

func TestIssueClient(t *testing.T) {
	ca, err := NewCA("test-ca")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user   string
		groups []string
	}{
		{user: "tenant-a", groups: nil},
		{user: AdminUser, groups: []string{"system:masters"}},
		{user: "system:serviceaccount:isolator-system:isolator-webhook", groups: []string{"system:serviceaccounts", "system:authenticated"}},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			pair, err := ca.IssueClient(tt.user, tt.groups...)
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(pair.CertPEM)
			if block == nil {
				t.Fatal("certificate is not PEM")
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if cert.Subject.CommonName != tt.user {
				t.Errorf("CN = %q, want %q", cert.Subject.CommonName, tt.user)
			}
			// The apiserver reads the groups from O in any order.
			if !slices.Equal(slices.Sorted(slices.Values(cert.Subject.Organization)), slices.Sorted(slices.Values(tt.groups))) {
				t.Errorf("O = %v, want %v", cert.Subject.Organization, tt.groups)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("not a client certificate of the CA: %v", err)
			}
		})
	}
	if _, err := ca.IssueClient(""); err == nil {
		t.Errorf("IssueClient with an empty user succeeded")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
