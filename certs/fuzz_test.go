package certs

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// FuzzParseMaterial feeds arbitrary Secret content (someone edited it, or another tool
// wrote it) to the parser the leader and `certs check` use: it must report problems,
// never panic, and never return a CA that is not one.
func FuzzParseMaterial(f *testing.F) {
	ca, err := NewCA("fuzz-ca", time.Hour, t0)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM, ca.KeyPEM, ca.CertPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte{}, []byte("garbage"))
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM, bundle []byte) {
		s := &corev1.Secret{Data: map[string][]byte{
			corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM, corev1.ServiceAccountRootCAKey: bundle,
			SignerCertKey: certPEM, SignerKeyKey: keyPEM,
		}}
		m, _ := ParseMaterial(s)
		if m.Signer != nil && !m.Signer.Cert.IsCA {
			t.Fatal("accepted a signer that is not a CA")
		}
		if m.Leaf != nil && (m.Leaf.Cert == nil || m.Leaf.Key == nil) {
			t.Fatal("a leaf without certificate or key")
		}
		_, _ = ParseCertificates(bundle)
	})
}
