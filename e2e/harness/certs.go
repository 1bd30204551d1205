package harness

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Names of the files that WriteServingCerts writes: the layout of a kubernetes.io/tls
// Secret with a CA, which is what controller-runtime's webhook server reads from its
// --cert-dir.
const (
	TLSCertFile = "tls.crt"
	TLSKeyFile  = "tls.key"
	CACertFile  = "ca.crt"
)

// certValidity is long enough for any test run and short enough that a leaked key is
// worthless soon.
const certValidity = 24 * time.Hour

// CA is a certificate authority for tests. All keys are ECDSA P-256: quick to generate and
// accepted by every Kubernetes component.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CertPEM is Cert, PEM encoded: what a client's trust bundle (or a webhook's
	// caBundle) holds.
	CertPEM []byte
}

// KeyPair is a PEM-encoded certificate and its private key.
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA creates a self-signed CA named commonName.
func NewCA(commonName string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA %q: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA %q: %w", commonName, err)
	}
	return &CA{Cert: cert, Key: key, CertPEM: pemBlock("CERTIFICATE", der)}, nil
}

// IssueServing issues a server certificate for the given DNS names and IP addresses; the
// first DNS name (or "localhost") is also its common name.
func (ca *CA) IssueServing(dnsNames []string, ips []net.IP) (KeyPair, error) {
	if len(dnsNames) == 0 && len(ips) == 0 {
		return KeyPair{}, errors.New("issue serving certificate: no DNS names and no IP addresses: a client could not verify it")
	}
	cn := "localhost"
	if len(dnsNames) > 0 {
		cn = dnsNames[0]
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: cn},
		DNSNames:    dnsNames,
		IPAddresses: ips,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
}

// IssueClient issues a client certificate that the kube-apiserver, trusting ca, reads as
// the user `user` in the given groups (CN is the user name, O the groups).
func (ca *CA) IssueClient(user string, groups ...string) (KeyPair, error) {
	if user == "" {
		return KeyPair{}, errors.New("issue client certificate: empty user name")
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: user, Organization: groups},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func (ca *CA) issue(tmpl *x509.Certificate) (KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generate key for %q: %w", tmpl.Subject.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return KeyPair{}, err
	}
	now := time.Now()
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-time.Hour)
	tmpl.NotAfter = now.Add(certValidity)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("sign certificate for %q: %w", tmpl.Subject.CommonName, err)
	}
	keyPEM, err := privateKeyPEM(key)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{CertPEM: pemBlock("CERTIFICATE", der), KeyPEM: keyPEM}, nil
}

// WriteServingCerts creates a fresh CA and a serving certificate it signs for dnsNames and
// ips, and writes tls.crt, tls.key and ca.crt into dir (created if needed). This is what a
// webhook under test serves with; ca.crt goes into the webhook configuration's caBundle.
func WriteServingCerts(dir string, dnsNames []string, ips []net.IP) (*CA, error) {
	ca, err := NewCA("isolator-e2e-serving-ca")
	if err != nil {
		return nil, err
	}
	pair, err := ca.IssueServing(dnsNames, ips)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("serving certificates: %w", err)
	}
	for name, data := range map[string][]byte{TLSCertFile: pair.CertPEM, TLSKeyFile: pair.KeyPEM, CACertFile: ca.CertPEM} {
		if err := writeFileAtomic(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, fmt.Errorf("serving certificates: %w", err)
		}
	}
	return ca, nil
}

// newServiceAccountKey returns a PEM private key and the matching PEM public key, for the
// apiserver to sign and check service account tokens with.
func newServiceAccountKey() (private, public []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate service account key: %w", err)
	}
	private, err = privateKeyPEM(key)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("encode service account public key: %w", err)
	}
	return private, pemBlock("PUBLIC KEY", der), nil
}

func privateKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pemBlock("PRIVATE KEY", der), nil
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// newSerial returns 128 random bits: RFC 5280 asks for unpredictable serial numbers.
func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return serial, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it into place,
// so that no reader ever sees half a certificate.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
