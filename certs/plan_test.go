package certs

import (
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testRenewal() Renewal {
	dns, ips := ServingNames(ServiceName, "isolator-system", []string{"127.0.0.1", "localhost"})
	return Renewal{
		DNSNames: dns, IPs: ips,
		LeafLifetime: 30 * time.Minute, CALifetime: 10 * time.Hour,
		PropagationDelay: 10 * time.Second, RetireGrace: 20 * time.Second, Poll: time.Second,
	}
}

// recordInjected is what the leader does after injecting m's bundle at t.
func recordInjected(m *Material, t time.Time) {
	m.BundleSHA256, m.BundleInjectedAt = BundleHash(m.BundlePEM()), t
}

func mustPlan(t *testing.T, p Renewal, m *Material, replicas []Replica, now time.Time) ([]Change, time.Time) {
	t.Helper()
	changes, wake, err := p.Plan(m, replicas, now)
	if err != nil {
		t.Fatalf("Plan at %s: %v", now, err)
	}
	return changes, wake
}

func kinds(changes []Change) []string {
	var out []string
	for _, c := range changes {
		out = append(out, c.Kind)
	}
	return out
}

// steady returns material after bootstrap and promotion at t0: one CA signing one leaf.
func steady(t *testing.T, p Renewal) *Material {
	t.Helper()
	m := &Material{}
	mustPlan(t, p, m, nil, t0)
	recordInjected(m, t0)
	mustPlan(t, p, m, nil, t0.Add(p.PropagationDelay))
	if m.Signer == nil || m.Leaf == nil || m.Next != nil {
		t.Fatalf("bootstrap did not reach a signer and a leaf: %+v", m)
	}
	return m
}

func TestPlanBootstrap(t *testing.T) {
	p := testRenewal()
	m := &Material{}
	changes, wake := mustPlan(t, p, m, nil, t0)
	if m.Next == nil || m.Signer != nil || m.Leaf != nil {
		t.Fatalf("after bootstrap: next=%v signer=%v leaf=%v, want only next", m.Next != nil, m.Signer != nil, m.Leaf != nil)
	}
	if len(m.Bundle) != 1 || !m.Bundle[0].Equal(m.Next.Cert) {
		t.Fatalf("bundle = %d certs, want exactly the new CA", len(m.Bundle))
	}
	if got := kinds(changes); !slices.Equal(got, []string{""}) {
		t.Errorf("change kinds = %q, want one uncounted change", got)
	}
	if want := t0.Add(p.Poll); !wake.Equal(want) {
		t.Errorf("wake = %s, want %s (waiting for the injection)", wake, want)
	}
	if m.Next.Cert.NotAfter.Sub(t0) != p.CALifetime || !m.Next.Cert.IsCA {
		t.Errorf("CA: IsCA=%v lifetime %s, want a CA for %s", m.Next.Cert.IsCA, m.Next.Cert.NotAfter.Sub(t0), p.CALifetime)
	}

	// Injected, but the apiservers may not have seen it yet: no leaf.
	recordInjected(m, t0.Add(time.Second))
	changes, wake = mustPlan(t, p, m, nil, t0.Add(5*time.Second))
	if len(changes) != 0 || m.Leaf != nil || m.Signer != nil {
		t.Fatalf("promoted before the propagation delay: changes %v", changes)
	}
	if want := t0.Add(time.Second + p.PropagationDelay); !wake.Equal(want) {
		t.Errorf("wake = %s, want %s", wake, want)
	}

	now := t0.Add(time.Second + p.PropagationDelay)
	changes, wake = mustPlan(t, p, m, nil, now)
	if got := kinds(changes); !slices.Equal(got, []string{"", ""}) {
		t.Errorf("change kinds = %q, want promotion and first leaf, neither counted as a rotation", got)
	}
	if m.Signer == nil || m.Next != nil || m.Leaf == nil || !m.SignerSince.Equal(now) {
		t.Fatalf("after promotion: signer=%v next=%v leaf=%v since=%s", m.Signer != nil, m.Next != nil, m.Leaf != nil, m.SignerSince)
	}
	leaf := m.Leaf.Cert
	if err := VerifyServing(m.BundlePEM(), []*x509.Certificate{leaf}, "isolator-webhook.isolator-system.svc", now); err != nil {
		t.Errorf("leaf does not verify against the bundle: %v", err)
	}
	if err := VerifyServing(m.BundlePEM(), []*x509.Certificate{leaf}, "127.0.0.1", now); err != nil {
		t.Errorf("leaf does not verify for the extra IP SAN: %v", err)
	}
	if !slices.Equal(leaf.DNSNames, p.DNSNames) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) {
		t.Errorf("leaf names = %v %v, want %v [127.0.0.1]", leaf.DNSNames, leaf.IPAddresses, p.DNSNames)
	}
	if got := leaf.NotAfter.Sub(now); got != p.LeafLifetime {
		t.Errorf("leaf lifetime = %s, want %s", got, p.LeafLifetime)
	}
	if want := RenewAt(leaf); !wake.Equal(want) {
		t.Errorf("wake = %s, want the leaf's renewal %s", wake, want)
	}
}

func TestPlanLeafRenewal(t *testing.T) {
	p := testRenewal()
	tests := []struct {
		name      string
		prepare   func(m *Material) time.Time // returns "now"
		wantKinds []string
		renewed   bool
	}{
		{"before 2/3 of the lifetime nothing happens", func(m *Material) time.Time {
			return RenewAt(m.Leaf.Cert).Add(-time.Second)
		}, nil, false},
		{"at 2/3 of the lifetime the leaf is renewed", func(m *Material) time.Time {
			return RenewAt(m.Leaf.Cert)
		}, []string{RotateLeaf}, true},
		{"a forced rotation renews at once", func(m *Material) time.Time {
			m.Rotate = RotateLeaf
			return t0.Add(time.Minute)
		}, []string{RotateLeaf}, true},
		{"other names renew at once", func(m *Material) time.Time {
			p.DNSNames = nil
			defer func() { p.DNSNames = testRenewal().DNSNames }()
			leaf, err := IssueServing(m.Signer, []string{"old.example"}, nil, p.LeafLifetime, t0)
			if err != nil {
				t.Fatal(err)
			}
			m.Leaf = leaf
			return t0.Add(time.Minute)
		}, []string{RotateLeaf}, true},
		{"a leaf from another CA is replaced", func(m *Material) time.Time {
			other, err := NewCA("other", p.CALifetime, t0)
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := IssueServing(other, p.DNSNames, p.IPs, p.LeafLifetime, t0)
			if err != nil {
				t.Fatal(err)
			}
			m.Leaf = leaf
			return t0.Add(time.Minute)
		}, []string{RotateLeaf}, true},
		{"an unknown rotate value is dropped and says so", func(m *Material) time.Time {
			m.Rotate = "everything"
			return t0.Add(time.Minute)
		}, []string{""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := steady(t, p)
			now := tt.prepare(m)
			before := m.Leaf
			signer := m.Signer
			changes, _ := mustPlan(t, p, m, nil, now)
			if got := kinds(changes); !slices.Equal(got, tt.wantKinds) {
				t.Errorf("change kinds = %q, want %q (%v)", got, tt.wantKinds, changes)
			}
			if renewed := m.Leaf != before; renewed != tt.renewed {
				t.Errorf("renewed = %v, want %v", renewed, tt.renewed)
			}
			if m.Rotate != "" {
				t.Errorf("rotate annotation = %q, want it cleared", m.Rotate)
			}
			if m.Signer != signer || m.Next != nil || len(m.Bundle) != 1 {
				t.Errorf("the CA changed during a leaf renewal: next=%v bundle=%d", m.Next != nil, len(m.Bundle))
			}
			if err := VerifyServing(m.BundlePEM(), []*x509.Certificate{m.Leaf.Cert}, p.DNSNames[0], now); err != nil {
				t.Errorf("served leaf does not verify: %v", err)
			}
		})
	}
}

func TestPlanCARotation(t *testing.T) {
	p := testRenewal()
	m := steady(t, p)
	ca1, leaf1 := m.Signer, m.Leaf
	now := t0.Add(5 * time.Minute)

	// Forced: the new CA joins the bundle; the leaf stays.
	m.Rotate = RotateCA
	changes, _ := mustPlan(t, p, m, nil, now)
	if m.Next == nil || m.Signer != ca1 || m.Leaf != leaf1 || m.Rotate != "" {
		t.Fatalf("after the request: next=%v signer kept=%v leaf kept=%v rotate=%q", m.Next != nil, m.Signer == ca1, m.Leaf == leaf1, m.Rotate)
	}
	if got := kinds(changes); !slices.Equal(got, []string{""}) {
		t.Errorf("change kinds = %q", got)
	}
	ca2 := m.Next
	if len(m.Bundle) != 2 || !m.Bundle[0].Equal(ca1.Cert) || !m.Bundle[1].Equal(ca2.Cert) {
		t.Fatalf("bundle should be [old, new], has %d certs", len(m.Bundle))
	}

	// The bundle recorded as injected is the old one: no promotion however long we wait.
	mustPlan(t, p, m, nil, now.Add(time.Minute))
	if m.Next != ca2 {
		t.Fatal("promoted a CA whose bundle was never recorded as injected")
	}

	// Injected: promotion after the propagation delay, with a new leaf from the new CA.
	recordInjected(m, now)
	mustPlan(t, p, m, nil, now.Add(p.PropagationDelay-time.Millisecond))
	if m.Next != ca2 {
		t.Fatal("promoted before the propagation delay")
	}
	promoted := now.Add(p.PropagationDelay)
	changes, _ = mustPlan(t, p, m, nil, promoted)
	if got := kinds(changes); !slices.Equal(got, []string{RotateCA, RotateLeaf}) {
		t.Errorf("change kinds = %q, want ca then leaf", got)
	}
	if m.Signer != ca2 || m.Next != nil || m.Leaf == leaf1 || !m.SignerSince.Equal(promoted) {
		t.Fatalf("after promotion: signer is new=%v next=%v new leaf=%v", m.Signer == ca2, m.Next != nil, m.Leaf != leaf1)
	}
	if err := VerifyServing(m.BundlePEM(), []*x509.Certificate{m.Leaf.Cert}, p.DNSNames[0], promoted); err != nil {
		t.Errorf("new leaf: %v", err)
	}
	if err := VerifyServing(m.BundlePEM(), []*x509.Certificate{leaf1.Cert}, p.DNSNames[0], promoted); err != nil {
		t.Errorf("old leaf must still verify while replicas switch: %v", err)
	}

	old := Replica{Identity: "a", Serial: Serial(leaf1.Cert), IssuerKeyID: KeyID(ca1.Cert.SubjectKeyId)}
	cur := Replica{Identity: "b", Serial: Serial(m.Leaf.Cert), IssuerKeyID: KeyID(ca2.Cert.SubjectKeyId)}
	afterGrace := promoted.Add(p.RetireGrace)
	tests := []struct {
		name      string
		replicas  func(now time.Time) []Replica
		now       time.Time
		wantCAs   int
		wantWake  time.Time
		wantRetir bool
	}{
		{"within the grace period the old CA stays", func(now time.Time) []Replica {
			cur.Expires = now.Add(time.Minute)
			return []Replica{cur}
		}, promoted.Add(time.Second), 2, afterGrace, false},
		{"a live replica on the old CA holds it", func(now time.Time) []Replica {
			old.Expires, cur.Expires = now.Add(time.Minute), now.Add(time.Minute)
			return []Replica{old, cur}
		}, afterGrace, 2, afterGrace.Add(p.Poll), false},
		{"an expired report does not hold it", func(now time.Time) []Replica {
			old.Expires, cur.Expires = now.Add(-time.Second), now.Add(time.Minute)
			return []Replica{old, cur}
		}, afterGrace, 1, time.Time{}, true},
		{"a replica that serves nothing yet does not hold it", func(now time.Time) []Replica {
			cur.Expires = now.Add(time.Minute)
			return []Replica{{Identity: "new", Expires: now.Add(time.Minute)}, cur}
		}, afterGrace, 1, time.Time{}, true},
		{"every replica on the new CA: the old one leaves", func(now time.Time) []Replica {
			cur.Expires = now.Add(time.Minute)
			c2 := cur
			c2.Identity = "c"
			return []Replica{cur, c2}
		}, afterGrace, 1, time.Time{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mm := *m
			mm.Bundle = slices.Clone(m.Bundle)
			changes, wake := mustPlan(t, p, &mm, tt.replicas(tt.now), tt.now)
			if len(mm.Bundle) != tt.wantCAs {
				t.Errorf("bundle has %d CAs, want %d", len(mm.Bundle), tt.wantCAs)
			}
			if !tt.wantWake.IsZero() && !wake.Equal(tt.wantWake) {
				t.Errorf("wake = %s, want %s", wake, tt.wantWake)
			}
			retired := slices.ContainsFunc(changes, func(c Change) bool { return strings.Contains(c.Message, "removed CA") })
			if retired != tt.wantRetir {
				t.Errorf("retired = %v, want %v (%v)", retired, tt.wantRetir, changes)
			}
			if tt.wantRetir && !mm.Bundle[0].Equal(ca2.Cert) {
				t.Error("the bundle kept the wrong CA")
			}
		})
	}
}

func TestPlanCADueAtTwoThirds(t *testing.T) {
	p := testRenewal()
	m := steady(t, p)
	due := RenewAt(m.Signer.Cert)
	// Keep the leaf fresh so only the CA is due.
	_, wake := mustPlan(t, p, m, nil, due.Add(-time.Hour))
	if m.Next != nil {
		t.Fatal("CA rotation started before 2/3 of its lifetime")
	}
	if wake.After(due) {
		t.Errorf("wake = %s, after the CA's renewal %s", wake, due)
	}
	changes, _ := mustPlan(t, p, m, nil, due)
	if m.Next == nil || len(m.Bundle) != 2 {
		t.Fatalf("CA rotation not started at 2/3 of its lifetime: %v", changes)
	}
}

func TestPlanRemovesExpiredCAs(t *testing.T) {
	p := testRenewal()
	m := steady(t, p)
	expired, err := NewCA("expired", time.Hour, t0.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	m.Bundle = append(m.Bundle, expired.Cert)
	mustPlan(t, p, m, nil, t0.Add(time.Minute))
	if len(m.Bundle) != 1 || !m.Bundle[0].Equal(m.Signer.Cert) {
		t.Errorf("bundle has %d CAs, want only the signer", len(m.Bundle))
	}
}

func TestPlanRestoresSignerToBundle(t *testing.T) {
	p := testRenewal()
	m := steady(t, p)
	m.Bundle = nil // someone emptied ca.crt
	changes, _ := mustPlan(t, p, m, nil, t0.Add(time.Minute))
	if len(m.Bundle) != 1 || !m.Bundle[0].Equal(m.Signer.Cert) || len(changes) != 1 {
		t.Errorf("bundle %d CAs, changes %v: want the signer restored", len(m.Bundle), changes)
	}
}

func TestMaterialRoundTrip(t *testing.T) {
	p := testRenewal()
	m := steady(t, p)
	m.Rotate = RotateCA
	mustPlan(t, p, m, nil, t0.Add(time.Minute)) // a rotation in flight: signer and next
	recordInjected(m, t0.Add(2*time.Minute))
	m.Rotate = RotateLeaf
	s := &corev1.Secret{}
	m.WriteTo(s)
	if s.Type != corev1.SecretTypeTLS || s.Annotations[AnnotationMode] != ModeSelf {
		t.Errorf("type %q mode %q", s.Type, s.Annotations[AnnotationMode])
	}
	got, errs := ParseMaterial(s)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if !got.Leaf.Cert.Equal(m.Leaf.Cert) || !got.Signer.Cert.Equal(m.Signer.Cert) || !got.Next.Cert.Equal(m.Next.Cert) {
		t.Error("leaf, signer or next changed in the round trip")
	}
	if !got.Signer.Key.Equal(m.Signer.Key) || !got.Next.Key.Equal(m.Next.Key) || !got.Leaf.Key.Equal(m.Leaf.Key) {
		t.Error("a private key changed in the round trip")
	}
	if len(got.Bundle) != 2 || got.Rotate != RotateLeaf || got.BundleSHA256 != m.BundleSHA256 ||
		!got.BundleInjectedAt.Equal(m.BundleInjectedAt) || !got.SignerSince.Equal(m.SignerSince) {
		t.Errorf("got bundle %d rotate %q sha %q injected %s since %s", len(got.Bundle), got.Rotate, got.BundleSHA256, got.BundleInjectedAt, got.SignerSince)
	}

	// Clearing fields removes their keys.
	m.Next, m.Rotate = nil, ""
	m.WriteTo(s)
	for _, k := range []string{NextCertKey, NextKeyKey} {
		if _, ok := s.Data[k]; ok {
			t.Errorf("data key %s left behind", k)
		}
	}
	if _, ok := s.Annotations[AnnotationRotate]; ok {
		t.Error("rotate annotation left behind")
	}

	// A broken entry is reported by key, and the rest still parses.
	s.Data[SignerKeyKey] = []byte("garbage")
	got, errs = ParseMaterial(s)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), SignerCertKey) || got.Signer != nil || got.Leaf == nil {
		t.Errorf("errs %v signer %v leaf %v", errs, got.Signer != nil, got.Leaf != nil)
	}
}
