package certs

import (
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the serving certificate metrics (docs/certificates.md says what to alert on).
type Metrics struct {
	// Expiry is the NotAfter of the certificate this replica serves (cert="leaf") and of
	// the CA in the bundle that signed it (cert="ca").
	Expiry *prometheus.GaugeVec
	// Rotations counts the rotations this process carried out as the self-managed leader.
	Rotations *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg (controller-runtime's
// registry in the webhook, a fresh one in tests).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "isolator_certs_expiry_timestamp_seconds",
			Help: "Unix time at which a serving certificate expires: cert=leaf is the one this replica serves now, cert=ca the CA in the bundle that signed it.",
		}, []string{"cert"}),
		Rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_certs_rotations_total",
			Help: "Rotations carried out by this replica as the self-managed certificate leader, by kind: leaf (a new serving certificate replaced the old one) or ca (a new CA took over signing).",
		}, []string{"kind"}),
	}
	m.Rotations.WithLabelValues(RotateLeaf)
	m.Rotations.WithLabelValues(RotateCA)
	reg.MustRegister(m.Expiry, m.Rotations)
	return m
}

// observeServing records the served leaf and the CA among bundle that signed it.
func (m *Metrics) observeServing(leaf *x509.Certificate, bundle []*x509.Certificate) {
	if m == nil || leaf == nil {
		return
	}
	m.Expiry.WithLabelValues("leaf").Set(float64(leaf.NotAfter.Unix()))
	if ca := issuerIn(leaf, bundle); ca != nil {
		m.Expiry.WithLabelValues("ca").Set(float64(ca.NotAfter.Unix()))
	}
}

// issuerIn returns the certificate of bundle that signed c, if any.
func issuerIn(c *x509.Certificate, bundle []*x509.Certificate) *x509.Certificate {
	for _, ca := range bundle {
		if c.Equal(ca) || c.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}
