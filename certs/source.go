package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// served is one loaded serving certificate.
type served struct {
	cert  *tls.Certificate
	leaf  *x509.Certificate
	since time.Time
}

// SecretSource serves the key pair kept in the self-managed Secret, from memory. Every
// replica runs one: it watches that one Secret (the manager's cache holds nothing else
// of Secrets), switches to a new key pair the moment the Secret changes, and then reports
// what it serves in its report Lease. It never writes the Secret; the leader does.
type SecretSource struct {
	Namespace string
	// Identity names this replica in its report Lease (NewIdentity).
	Identity string
	// ReportTTL is how long a report counts without renewal; renewed every third of it.
	ReportTTL time.Duration
	// Owner names the MutatingWebhookConfiguration that owns the report Lease (see
	// Rotator.Owner). Empty: no owner.
	Owner   string
	Metrics *Metrics
	Log     logr.Logger

	cache  cache.Cache
	reader client.Reader
	client client.Client

	current atomic.Pointer[served]
	poke    chan struct{}
}

// NewSecretSource creates the source; the manager's cache must include the Secret and the
// report Leases (CacheObjects). reader reads uncached (the manager's APIReader).
func NewSecretSource(c cache.Cache, reader client.Reader, cl client.Client, namespace, identity string, m *Metrics, log logr.Logger) *SecretSource {
	return &SecretSource{
		Namespace: namespace, Identity: identity, ReportTTL: 30 * time.Second, Metrics: m, Log: log,
		cache: c, reader: reader, client: cl, poke: make(chan struct{}, 1),
	}
}

// GetCertificate is a tls.Config.GetCertificate.
func (s *SecretSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cur := s.current.Load()
	if cur == nil {
		return nil, ErrNotLoaded
	}
	return cur.cert, nil
}

// Loaded reports whether a key pair has been loaded.
func (s *SecretSource) Loaded() bool { return s.current.Load() != nil }

// Serving returns the certificate chain served now, nil before the first load.
func (s *SecretSource) Serving() []*x509.Certificate {
	if cur := s.current.Load(); cur != nil {
		return []*x509.Certificate{cur.leaf}
	}
	return nil
}

// NeedLeaderElection is false: every replica serves.
func (s *SecretSource) NeedLeaderElection() bool { return false }

// Start loads the key pair whenever the Secret changes, and keeps this replica's report
// fresh, until ctx ends; then it withdraws the report.
func (s *SecretSource) Start(ctx context.Context) error {
	inf, err := s.cache.GetInformer(ctx, &corev1.Secret{})
	if err != nil {
		return fmt.Errorf("watching Secret %s/%s: %w", s.Namespace, SecretName, err)
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    s.load,
		UpdateFunc: func(_, obj any) { s.load(obj) },
		// A deleted Secret changes nothing here: the leader recreates it, and until
		// then the last key pair keeps serving.
	}); err != nil {
		return fmt.Errorf("watching Secret %s/%s: %w", s.Namespace, SecretName, err)
	}
	s.Log.Info("waiting for the serving certificate in the Secret", "secret", SecretName, "namespace", s.Namespace, "identity", s.Identity)
	s.reportLoop(ctx)
	// Withdraw the report so a rotation need not wait for it to expire.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	lease := &coordinationv1.Lease{}
	lease.Name, lease.Namespace = ReportLeaseName(s.Identity), s.Namespace
	if err := s.client.Delete(wctx, lease); client.IgnoreNotFound(err) != nil {
		s.Log.Info("could not withdraw the serving certificate report; it expires on its own", "lease", lease.Name, "problem", err.Error())
	}
	return nil
}

func (s *SecretSource) load(obj any) {
	sec, ok := obj.(*corev1.Secret)
	if !ok || sec.Name != SecretName || sec.Namespace != s.Namespace {
		return
	}
	certPEM, keyPEM := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if len(certPEM) == 0 {
		return // bootstrap: the first CA is not trusted yet
	}
	if cur := s.current.Load(); cur != nil && string(cur.cert.Certificate[0]) == string(firstDER(certPEM)) {
		return
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		s.Log.Error(err, "ignoring an unusable serving key pair in the Secret; the previous one keeps serving",
			"secret", SecretName, "resourceVersion", sec.ResourceVersion)
		return
	}
	s.current.Store(&served{cert: &pair, leaf: pair.Leaf, since: time.Now()})
	bundle, _ := ParseCertificates(sec.Data[corev1.ServiceAccountRootCAKey])
	s.Metrics.observeServing(pair.Leaf, bundle)
	s.Log.Info("serving certificate loaded", "serial", Serial(pair.Leaf), "issuerKeyID", KeyID(pair.Leaf.AuthorityKeyId),
		"notAfter", pair.Leaf.NotAfter.UTC().Format(time.RFC3339))
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// reportLoop writes the report after each switch (serve first, report second: a report
// that lags is safe, one that leads is not) and renews it every third of its TTL.
func (s *SecretSource) reportLoop(ctx context.Context) {
	tick := time.NewTicker(max(s.ReportTTL/3, 100*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.poke:
		case <-tick.C:
		}
		cur := s.current.Load()
		if cur == nil {
			continue
		}
		if err := writeReport(ctx, s.reader, s.client, s.Namespace, s.Identity, s.Owner, s.ReportTTL, cur); err != nil && ctx.Err() == nil {
			s.Log.Error(err, "reporting the served certificate; retrying")
			select {
			case s.poke <- struct{}{}:
			default:
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

func firstDER(certPEM []byte) []byte {
	certs, err := ParseCertificates(certPEM)
	if err != nil || len(certs) == 0 {
		return nil
	}
	return certs[0].Raw
}
