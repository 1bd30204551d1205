package certs

import (
	"bytes"
	"crypto/x509"
	"fmt"
	"net"
	"slices"
	"time"
)

// Renewal decides, from the self-managed Secret's content, the replicas' reports and the
// time, what the leader does next. It holds no client: the leader feeds it what it read
// and writes back what it returns, so every rule below is unit-tested without a cluster.
//
// The rules, in order:
//  1. No CA at all: create one as the next CA (it joins the bundle and waits like any
//     new CA; the first serving certificate comes once it is trusted).
//  2. CAs that have expired leave the bundle.
//  3. A forced rotation (AnnotationRotate) or a signer at 2/3 of its lifetime starts a
//     CA rotation: a new CA joins the bundle as Next.
//  4. Next is promoted to signer once the webhook configurations have held a bundle
//     containing it for PropagationDelay (AnnotationBundleInjectedAt), so no replica
//     serves a certificate it signed before the apiservers trust it.
//  5. The serving certificate is reissued when missing, not signed by the signer,
//     at 2/3 of its lifetime, naming other hosts than wanted, or forced.
//  6. Other CAs leave the bundle once every live replica reports serving a certificate
//     from the signer, and RetireGrace has passed since the signer took over.
type Renewal struct {
	DNSNames []string
	IPs      []net.IP
	// LeafLifetime and CALifetime are the validity of new certificates.
	LeafLifetime, CALifetime time.Duration
	// PropagationDelay is how long a new CA must have been in the webhook configurations
	// before it signs: the time the apiservers take to see the configuration change.
	PropagationDelay time.Duration
	// RetireGrace is how long old CAs stay after the signer changed, at least: it covers a
	// replica that loaded the old certificate but has not reported yet.
	RetireGrace time.Duration
	// Poll is how soon to look again while waiting for replicas to switch.
	Poll time.Duration
}

// Replica is one webhook replica's report of the serving certificate it serves.
type Replica struct {
	Identity string
	// Serial and IssuerKeyID identify the served certificate and the CA that signed it
	// (its AuthorityKeyId); empty when the replica serves nothing yet.
	Serial, IssuerKeyID string
	// Expires is when the report stops counting unless renewed.
	Expires time.Time
}

// Change is one thing Plan did, for logs, Events and the rotations metric.
type Change struct {
	// Kind is RotateLeaf or RotateCA when it counts as a rotation, else "".
	Kind    string
	Message string
}

// Plan updates m in place and returns what it changed and when to look again.
func (p Renewal) Plan(m *Material, replicas []Replica, now time.Time) ([]Change, time.Time, error) {
	var changes []Change
	wake := now.Add(time.Hour)
	wakeAt := func(t time.Time) {
		if t.Before(wake) {
			wake = t
		}
	}
	newCA := func() error {
		ca, err := NewCA(fmt.Sprintf("isolator-webhook-ca@%d", now.Unix()), p.CALifetime, now)
		if err != nil {
			return err
		}
		m.Next = ca
		m.Bundle = append(m.Bundle, ca.Cert)
		return nil
	}

	// 1. Bootstrap.
	if m.Signer == nil && m.Next == nil {
		if err := newCA(); err != nil {
			return nil, now, err
		}
		changes = append(changes, Change{Message: "created CA " + describe(m.Next.Cert) + "; it signs once the webhook configurations trust it"})
	}
	// The signer and Next must be in the bundle whatever happened to ca.crt.
	for _, ca := range []*KeyPair{m.Signer, m.Next} {
		if ca != nil && !containsCert(m.Bundle, ca.Cert) {
			m.Bundle = append(m.Bundle, ca.Cert)
			changes = append(changes, Change{Message: "restored CA " + describe(ca.Cert) + " to the bundle"})
		}
	}

	// 2. Expired CAs.
	m.Bundle = slices.DeleteFunc(m.Bundle, func(c *x509.Certificate) bool {
		if now.Before(c.NotAfter) || m.isSignerOrNext(c) {
			return false
		}
		changes = append(changes, Change{Message: "removed expired CA " + describe(c) + " from the bundle"})
		return true
	})

	// 3. Start a CA rotation.
	forceLeaf := false
	switch m.Rotate {
	case RotateCA:
		if m.Next == nil {
			if err := newCA(); err != nil {
				return nil, now, err
			}
			changes = append(changes, Change{Message: "CA rotation requested: new CA " + describe(m.Next.Cert) + " joins the bundle"})
		}
		m.Rotate = ""
	case RotateLeaf:
		forceLeaf = true
		m.Rotate = ""
	case "":
	default:
		changes = append(changes, Change{Message: fmt.Sprintf("ignored %s=%q: use %q or %q", AnnotationRotate, m.Rotate, RotateLeaf, RotateCA)})
		m.Rotate = ""
	}
	if m.Signer != nil && m.Next == nil {
		if due := RenewAt(m.Signer.Cert); !now.Before(due) {
			if err := newCA(); err != nil {
				return nil, now, err
			}
			changes = append(changes, Change{Message: "CA " + describe(m.Signer.Cert) + " reached 2/3 of its lifetime: new CA " + describe(m.Next.Cert) + " joins the bundle"})
		} else {
			wakeAt(due)
		}
	}

	// 4. Promote Next once the configurations trust it.
	if m.Next != nil {
		trustedAt := m.BundleInjectedAt.Add(p.PropagationDelay)
		switch {
		case m.BundleSHA256 != BundleHash(m.BundlePEM()) || m.BundleInjectedAt.IsZero():
			wakeAt(now.Add(p.Poll)) // the leader injects the bundle, then records it
		case now.Before(trustedAt):
			wakeAt(trustedAt)
		default:
			kind := RotateCA
			if m.Signer == nil {
				kind = "" // the first CA: nothing rotated
			}
			m.Signer, m.Next, m.SignerSince = m.Next, nil, now
			forceLeaf = true
			changes = append(changes, Change{Kind: kind, Message: "CA " + describe(m.Signer.Cert) + " now signs serving certificates"})
		}
	}

	// 5. The serving certificate.
	if m.Signer != nil {
		reason := ""
		switch {
		case m.Leaf == nil:
			reason = "no serving certificate yet"
		case forceLeaf:
			reason = "rotation requested"
		case !bytes.Equal(m.Leaf.Cert.AuthorityKeyId, m.Signer.Cert.SubjectKeyId) || m.Leaf.Cert.CheckSignatureFrom(m.Signer.Cert) != nil:
			reason = "not signed by the current CA"
		case !now.Before(RenewAt(m.Leaf.Cert)):
			reason = "reached 2/3 of its lifetime"
		case !sameNames(m.Leaf.Cert, p.DNSNames, p.IPs):
			reason = "its names differ from the wanted ones"
		}
		if reason != "" {
			old := m.Leaf
			leaf, err := IssueServing(m.Signer, p.DNSNames, p.IPs, p.LeafLifetime, now)
			if err != nil {
				return nil, now, err
			}
			m.Leaf = leaf
			kind := RotateLeaf
			if old == nil {
				kind = ""
			}
			changes = append(changes, Change{Kind: kind, Message: "issued serving certificate " + describe(leaf.Cert) + " (" + reason + ")"})
		}
		wakeAt(RenewAt(m.Leaf.Cert))
	}

	// 6. Retire CAs that nobody serves a certificate from.
	var retiring []*x509.Certificate
	for _, c := range m.Bundle {
		if !m.isSignerOrNext(c) {
			retiring = append(retiring, c)
		}
	}
	if len(retiring) > 0 && m.Signer != nil {
		signerID := KeyID(m.Signer.Cert.SubjectKeyId)
		var behind []string
		for _, r := range replicas {
			if r.IssuerKeyID != "" && r.IssuerKeyID != signerID && now.Before(r.Expires) {
				behind = append(behind, r.Identity)
			}
		}
		graceEnd := m.SignerSince.Add(p.RetireGrace)
		switch {
		case now.Before(graceEnd):
			wakeAt(graceEnd)
		case len(behind) > 0:
			wakeAt(now.Add(p.Poll))
		default:
			for _, c := range retiring {
				changes = append(changes, Change{Message: "every replica serves a certificate from CA " + describe(m.Signer.Cert) + ": removed CA " + describe(c) + " from the bundle"})
			}
			m.Bundle = slices.DeleteFunc(m.Bundle, func(c *x509.Certificate) bool { return !m.isSignerOrNext(c) })
		}
	}
	for _, c := range m.Bundle {
		wakeAt(c.NotAfter)
	}
	return changes, wake, nil
}

func (m *Material) isSignerOrNext(c *x509.Certificate) bool {
	return (m.Signer != nil && m.Signer.Cert.Equal(c)) || (m.Next != nil && m.Next.Cert.Equal(c))
}

func sameNames(c *x509.Certificate, dns []string, ips []net.IP) bool {
	if !slices.Equal(c.DNSNames, dns) || len(c.IPAddresses) != len(ips) {
		return false
	}
	for i := range ips {
		if !c.IPAddresses[i].Equal(ips[i]) {
			return false
		}
	}
	return true
}

func describe(c *x509.Certificate) string {
	return fmt.Sprintf("%q (serial %s, expires %s)", c.Subject.CommonName, Serial(c), c.NotAfter.UTC().Format(time.RFC3339))
}

// ServingNames are the DNS names of the webhook Service that a serving certificate must
// hold, followed by extra names and addresses (for local runs, e.g. 127.0.0.1,localhost).
func ServingNames(service, namespace string, extra []string) ([]string, []net.IP) {
	dns := []string{
		service + "." + namespace + ".svc",
		service + "." + namespace + ".svc.cluster.local",
		service + "." + namespace,
		service,
	}
	var ips []net.IP
	for _, e := range extra {
		if ip := net.ParseIP(e); ip != nil {
			ips = append(ips, ip)
		} else if !slices.Contains(dns, e) {
			dns = append(dns, e)
		}
	}
	return dns, ips
}
