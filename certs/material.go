package certs

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Names of isolator's serving certificate objects (shared with the manifests).
const (
	// SecretName is the kubernetes.io/tls Secret that holds the serving key pair and the
	// CA bundle, in both modes.
	SecretName = "isolator-webhook-tls"
	// ServiceName is the webhook's Service; the serving certificate names it.
	ServiceName = "isolator-webhook"
	// WebhookConfigurationName names both isolator's MutatingWebhookConfiguration and its
	// ValidatingWebhookConfiguration. Self-managed mode patches only these two.
	WebhookConfigurationName = "isolator"
)

// Keys of the self-managed Secret beyond the kubernetes.io/tls ones. The CA keys never
// leave the Secret; the webhook configurations get ca.crt only.
const (
	// SignerCertKey and SignerKeyKey are the CA that signs serving certificates now.
	SignerCertKey = "ca-signer.crt"
	SignerKeyKey  = "ca-signer.key"
	// NextCertKey and NextKeyKey are a new CA during a CA rotation: it is in ca.crt (and
	// so in the webhook configurations) but signs nothing until the apiservers trust it.
	NextCertKey = "ca-next.crt"
	NextKeyKey  = "ca-next.key"
)

// Annotations on the self-managed Secret.
const (
	// AnnotationMode marks a Secret as managed by isolator --cert-mode=self.
	AnnotationMode = "isolator.dev/cert-mode"
	// AnnotationRotate asks the leader for a rotation now: "leaf" or "ca". The leader
	// removes it when it has acted. `isolator certs rotate` sets it.
	AnnotationRotate = "isolator.dev/rotate"
	// AnnotationBundleSHA256 and AnnotationBundleInjectedAt record that every isolator
	// webhook configuration held this ca.crt (its SHA-256) from that time on.
	AnnotationBundleSHA256     = "isolator.dev/bundle-sha256"
	AnnotationBundleInjectedAt = "isolator.dev/bundle-injected-at"
	// AnnotationSignerSince is when the current signer started signing serving
	// certificates; older CAs leave the bundle no sooner than a grace period after it.
	AnnotationSignerSince = "isolator.dev/signer-since"
)

// Values of AnnotationRotate and of the kind label of the rotations metric.
const (
	RotateLeaf = "leaf"
	RotateCA   = "ca"
)

// ModeSelf is the value of AnnotationMode.
const ModeSelf = "self"

// Material is the parsed content of the self-managed Secret.
type Material struct {
	// Leaf is the serving key pair replicas serve; nil right after bootstrap, until the
	// first CA is trusted by the webhook configurations.
	Leaf *KeyPair
	// Bundle is ca.crt: every CA the webhook configurations must trust.
	Bundle []*x509.Certificate
	// Signer signs serving certificates; Next is the CA a rotation brings in.
	Signer, Next *KeyPair

	Rotate           string
	BundleSHA256     string
	BundleInjectedAt time.Time
	SignerSince      time.Time
}

// BundlePEM is ca.crt.
func (m *Material) BundlePEM() []byte { return EncodeCertificates(m.Bundle) }

// BundleHash identifies a bundle in AnnotationBundleSHA256.
func BundleHash(bundlePEM []byte) string {
	sum := sha256.Sum256(bundlePEM)
	return hex.EncodeToString(sum[:])
}

// ParseMaterial reads the self-managed Secret. Problems are returned per key, so that
// the leader can repair what is broken and keep what is not.
func ParseMaterial(s *corev1.Secret) (*Material, []error) {
	m := &Material{}
	var errs []error
	if len(s.Data[corev1.TLSCertKey]) > 0 || len(s.Data[corev1.TLSPrivateKeyKey]) > 0 {
		leaf, err := ParseKeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", corev1.TLSCertKey, corev1.TLSPrivateKeyKey, err))
		} else {
			m.Leaf = leaf
		}
	}
	if b := s.Data[corev1.ServiceAccountRootCAKey]; len(b) > 0 {
		bundle, err := ParseCertificates(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", corev1.ServiceAccountRootCAKey, err))
		} else {
			m.Bundle = bundle
		}
	}
	parseCA := func(certKey, keyKey string) *KeyPair {
		if len(s.Data[certKey]) == 0 && len(s.Data[keyKey]) == 0 {
			return nil
		}
		kp, err := ParseKeyPair(s.Data[certKey], s.Data[keyKey])
		if err == nil && !kp.Cert.IsCA {
			err = fmt.Errorf("certificate %q is not a CA", kp.Cert.Subject.CommonName)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", certKey, keyKey, err))
			return nil
		}
		return kp
	}
	m.Signer = parseCA(SignerCertKey, SignerKeyKey)
	m.Next = parseCA(NextCertKey, NextKeyKey)
	m.Rotate = s.Annotations[AnnotationRotate]
	m.BundleSHA256 = s.Annotations[AnnotationBundleSHA256]
	m.BundleInjectedAt = parseTime(s.Annotations[AnnotationBundleInjectedAt])
	m.SignerSince = parseTime(s.Annotations[AnnotationSignerSince])
	return m, errs
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// WriteTo stores the material into s (data and annotations), leaving other keys alone.
func (m *Material) WriteTo(s *corev1.Secret) {
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Type = corev1.SecretTypeTLS
	// kubernetes.io/tls requires both keys to exist; empty means "no leaf yet".
	s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey] = []byte{}, []byte{}
	if m.Leaf != nil {
		s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey] = m.Leaf.CertPEM, m.Leaf.KeyPEM
	}
	s.Data[corev1.ServiceAccountRootCAKey] = m.BundlePEM()
	setPair := func(certKey, keyKey string, kp *KeyPair) {
		if kp == nil {
			delete(s.Data, certKey)
			delete(s.Data, keyKey)
			return
		}
		s.Data[certKey], s.Data[keyKey] = kp.CertPEM, kp.KeyPEM
	}
	setPair(SignerCertKey, SignerKeyKey, m.Signer)
	setPair(NextCertKey, NextKeyKey, m.Next)
	setAnn := func(k, v string) {
		if v == "" {
			delete(s.Annotations, k)
			return
		}
		s.Annotations[k] = v
	}
	setAnn(AnnotationMode, ModeSelf)
	setAnn(AnnotationRotate, m.Rotate)
	setAnn(AnnotationBundleSHA256, m.BundleSHA256)
	setAnn(AnnotationBundleInjectedAt, formatTime(m.BundleInjectedAt))
	setAnn(AnnotationSignerSince, formatTime(m.SignerSince))
}
