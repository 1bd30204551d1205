package certs

import (
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	cmmeta "github.com/cert-manager/cert-manager/pkg/apis/meta/v1"
	corev1 "k8s.io/api/core/v1"
)

// Modes `isolator certs check` understands.
const (
	ModeCertManager = "cert-manager"
)

// Status of one checklist item.
type Status string

// A FAIL makes `certs check` exit 1; a WARN is worth a look but need not be an outage.
const (
	StatusOK   Status = "OK"
	StatusWarn Status = "WARN"
	StatusFail Status = "FAIL"
)

// Item is one line of the checklist, with details and, when it is not OK, a fix.
type Item struct {
	Status  Status
	Title   string
	Details []string
	Fix     string
}

// Facts are what `certs check` read from the cluster; Diagnose judges them.
type Facts struct {
	Namespace string
	Now       time.Time
	// Mode is ModeCertManager or ModeSelf.
	Mode string

	// Certificate is cert-manager's Certificate writing the Secret (cert-manager mode);
	// CertificateProblem says why there is none.
	Certificate        *cmapi.Certificate
	CertificateProblem string

	Secret        *corev1.Secret
	SecretProblem string

	Configurations []ConfigurationFacts

	// Served is the chain the webhook serves now, read from ServedFrom; ServedProblem
	// says why it could not be read.
	Served        []*x509.Certificate
	ServedFrom    string
	ServedProblem string

	// Replicas are the self-managed replicas' reports; ReplicasProblem says why they
	// could not be read.
	Replicas        []Replica
	ReplicasProblem string
}

// ConfigurationFacts is one of isolator's webhook configurations.
type ConfigurationFacts struct {
	Kind, Name string
	// Problem says why it could not be read ("" when read; Missing when not found).
	Problem  string
	Missing  bool
	Webhooks []WebhookFacts
}

// WebhookFacts is one webhook's client configuration.
type WebhookFacts struct {
	Name     string
	CABundle []byte
	// ServerName is the name the apiserver verifies: <service>.<namespace>.svc, or the
	// URL's host.
	ServerName string
	// Target describes where the apiserver sends requests, for messages.
	Target string
}

// ServerNameFor is the host name the apiserver verifies the webhook's certificate for.
func ServerNameFor(svcName, svcNamespace, rawURL string) (string, string) {
	if rawURL != "" {
		u, err := url.Parse(rawURL)
		if err != nil {
			return "", rawURL
		}
		return u.Hostname(), rawURL
	}
	return svcName + "." + svcNamespace + ".svc", "service " + svcNamespace + "/" + svcName
}

// Diagnose turns facts into a checklist.
func Diagnose(f Facts) []Item {
	var items []Item
	if f.Mode == ModeCertManager {
		items = append(items, checkCertificate(f))
	}
	secretItem, leaf := checkSecret(f)
	items = append(items, secretItem)
	if f.Mode == ModeSelf {
		items = append(items, checkSelf(f)...)
	}
	for _, c := range f.Configurations {
		items = append(items, checkConfiguration(f, c, leaf)...)
	}
	items = append(items, checkServed(f, leaf))
	return items
}

// Healthy reports whether no item failed.
func Healthy(items []Item) bool {
	return !slices.ContainsFunc(items, func(i Item) bool { return i.Status == StatusFail })
}

// Render prints the checklist.
func Render(items []Item) string {
	var b strings.Builder
	for _, it := range items {
		fmt.Fprintf(&b, "[%-4s] %s\n", it.Status, it.Title)
		for _, d := range it.Details {
			fmt.Fprintf(&b, "       %s\n", d)
		}
		if it.Fix != "" && it.Status != StatusOK {
			fmt.Fprintf(&b, "       fix: %s\n", it.Fix)
		}
	}
	return b.String()
}

func checkCertificate(f Facts) Item {
	c := f.Certificate
	if c == nil {
		return Item{Status: StatusFail, Title: "cert-manager Certificate for Secret " + SecretName,
			Details: []string{f.CertificateProblem},
			Fix:     "install cert-manager and apply manifests/overlays/cert-manager, or run the webhook with --cert-mode=self (manifests/overlays/self-signed)"}
	}
	title := fmt.Sprintf("Certificate %s/%s", c.Namespace, c.Name)
	var ready *cmapi.CertificateCondition
	for i := range c.Status.Conditions {
		if c.Status.Conditions[i].Type == cmapi.CertificateConditionReady {
			ready = &c.Status.Conditions[i]
		}
	}
	var details []string
	if c.Status.NotAfter != nil {
		details = append(details, "expires "+when(c.Status.NotAfter.Time, f.Now))
	}
	if c.Status.RenewalTime != nil {
		details = append(details, "renews "+when(c.Status.RenewalTime.Time, f.Now))
	}
	if c.Spec.IssuerRef.Name != "" {
		details = append(details, fmt.Sprintf("issuer %s %s", orDefault(c.Spec.IssuerRef.Kind, "Issuer"), c.Spec.IssuerRef.Name))
	}
	switch {
	case ready == nil:
		return Item{Status: StatusFail, Title: title + " has no Ready condition yet", Details: details,
			Fix: fmt.Sprintf("is cert-manager running? see `kubectl -n %s describe certificate %s` and the cert-manager logs", c.Namespace, c.Name)}
	case ready.Status != cmmeta.ConditionTrue:
		details = append([]string{fmt.Sprintf("Ready=%s %s: %s", ready.Status, ready.Reason, ready.Message)}, details...)
		return Item{Status: StatusFail, Title: title + " is not Ready", Details: details,
			Fix: fmt.Sprintf("`kubectl -n %s describe certificate %s` and its CertificateRequest say why; check the Issuer's Ready condition", c.Namespace, c.Name)}
	}
	if c.Status.RenewalTime != nil && f.Now.After(c.Status.RenewalTime.Add(time.Hour)) {
		return Item{Status: StatusWarn, Title: title + " is Ready but its renewal is overdue", Details: details,
			Fix: "check the cert-manager controller logs; `cmctl renew` forces a renewal"}
	}
	return Item{Status: StatusOK, Title: title + " is Ready", Details: details}
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// checkSecret returns the Secret's serving certificate for the checks that follow.
func checkSecret(f Facts) (Item, *x509.Certificate) {
	title := fmt.Sprintf("Secret %s/%s", f.Namespace, SecretName)
	fixMissing := "cert-manager writes it from the Certificate (see above)"
	if f.Mode == ModeSelf {
		fixMissing = "the elected webhook replica creates it in --cert-mode=self: is the webhook running, and may it create Secrets in " + f.Namespace + "?"
	}
	s := f.Secret
	if s == nil {
		return Item{Status: StatusFail, Title: title + " is missing", Details: nonEmpty(f.SecretProblem), Fix: fixMissing}, nil
	}
	var missing []string
	for _, k := range []string{corev1.TLSCertKey, corev1.TLSPrivateKeyKey, corev1.ServiceAccountRootCAKey} {
		if len(s.Data[k]) == 0 {
			missing = append(missing, k)
		}
	}
	if len(s.Data[corev1.TLSCertKey]) == 0 || len(s.Data[corev1.TLSPrivateKeyKey]) == 0 {
		return Item{Status: StatusFail, Title: title + " holds no serving key pair", Details: []string{"empty: " + strings.Join(missing, ", ")}, Fix: fixMissing}, nil
	}
	pair, err := ParseKeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return Item{Status: StatusFail, Title: title + " holds an unusable key pair", Details: []string{err.Error()},
			Fix: "delete the Secret so that it is issued again"}, nil
	}
	leaf := pair.Cert
	details := []string{"serving certificate " + describeLeaf(leaf, f.Now)}
	if len(missing) > 0 {
		details = append(details, "empty: "+strings.Join(missing, ", "))
	}
	if bundle, err := ParseCertificates(s.Data[corev1.ServiceAccountRootCAKey]); err == nil {
		if ca := issuerIn(leaf, bundle); ca != nil {
			details = append(details, "signed by CA "+describeCA(ca, f.Now))
		}
	}
	svcName := ServiceName + "." + f.Namespace + ".svc"
	switch {
	case !f.Now.Before(leaf.NotAfter):
		return Item{Status: StatusFail, Title: title + ": the serving certificate has expired", Details: details,
			Fix: "see why it was not renewed (above); `isolator certs rotate` (self) or `cmctl renew` (cert-manager) issues a new one"}, leaf
	case f.Now.Before(leaf.NotBefore):
		return Item{Status: StatusFail, Title: title + ": the serving certificate is not valid yet", Details: details,
			Fix: "check the clocks of the nodes and of the control plane"}, leaf
	case leaf.VerifyHostname(svcName) != nil:
		return Item{Status: StatusFail, Title: title + ": the serving certificate does not name " + svcName, Details: append(details, "names: "+strings.Join(names(leaf), ", ")),
			Fix: "the Certificate's dnsNames must include " + svcName}, leaf
	case f.Now.After(RenewAt(leaf).Add(time.Hour)):
		return Item{Status: StatusWarn, Title: title + ": the serving certificate is past its renewal time", Details: details,
			Fix: "is the issuer (cert-manager, or the elected webhook replica) running?"}, leaf
	}
	return Item{Status: StatusOK, Title: title + " holds the serving key pair", Details: details}, leaf
}

func checkSelf(f Facts) []Item {
	var items []Item
	m, problems := ParseMaterial(f.Secret)
	if m.Next != nil {
		items = append(items, Item{Status: StatusOK, Title: "CA rotation in progress: new CA " + describeCA(m.Next.Cert, f.Now) + " is in the bundle and signs once the webhook configurations have trusted it for --cert-propagation-delay"})
	}
	if len(m.Bundle) > 1 && m.Next == nil {
		items = append(items, Item{Status: StatusOK, Title: fmt.Sprintf("CA rotation finishing: %d CAs in the bundle; the old ones leave once every replica serves a certificate from the new CA", len(m.Bundle))})
	}
	if m.Rotate != "" {
		items = append(items, Item{Status: StatusWarn, Title: fmt.Sprintf("a %s rotation was requested and not acted on yet", m.Rotate),
			Fix: "the elected webhook replica acts on it within seconds: is one running (Lease isolator-webhook)?"})
	}
	for _, p := range problems {
		items = append(items, Item{Status: StatusFail, Title: "Secret entry broken: " + p.Error(), Fix: "the elected webhook replica replaces it; if this stays, delete the Secret"})
	}
	var live []Replica
	for _, r := range f.Replicas {
		if f.Now.Before(r.Expires) {
			live = append(live, r)
		}
	}
	if f.ReplicasProblem != "" {
		return append(items, Item{Status: StatusWarn, Title: "could not read the replicas' reports", Details: []string{f.ReplicasProblem},
			Fix: "`certs check` needs to list Leases in " + f.Namespace})
	}
	if len(live) == 0 {
		items = append(items, Item{Status: StatusWarn, Title: "no webhook replica reports a served certificate",
			Fix: "is the webhook running with --cert-mode=self, and may it write Leases in " + f.Namespace + "?"})
		return items
	}
	want := ""
	if m.Leaf != nil {
		want = Serial(m.Leaf.Cert)
	}
	item := Item{Status: StatusOK, Title: fmt.Sprintf("%d replica(s) report serving the Secret's certificate", len(live))}
	for _, r := range live {
		item.Details = append(item.Details, fmt.Sprintf("%s serves serial %s", r.Identity, r.Serial))
		if r.Serial != want {
			item.Status = StatusWarn
			item.Title = "some replicas serve another certificate than the Secret's"
			item.Fix = "normal for a few seconds after a rotation; if it stays, that replica does not see the Secret: check its logs"
		}
	}
	return append(items, item)
}

func checkConfiguration(f Facts, c ConfigurationFacts, leaf *x509.Certificate) []Item {
	title := c.Kind + " " + c.Name
	switch {
	case c.Missing:
		return []Item{{Status: StatusFail, Title: title + " is missing", Fix: "apply isolator's manifests"}}
	case c.Problem != "":
		return []Item{{Status: StatusFail, Title: title + " could not be read", Details: []string{c.Problem}}}
	}
	fix := "cert-manager's cainjector fills it from the annotation cert-manager.io/inject-ca-from: " + f.Namespace + "/<certificate>; is cainjector running?"
	if f.Mode == ModeSelf {
		fix = "the elected webhook replica injects it in --cert-mode=self: is one running, and may it patch webhook configurations?"
	}
	var items []Item
	for _, w := range c.Webhooks {
		wt := fmt.Sprintf("%s webhook %s", title, w.Name)
		if len(w.CABundle) == 0 {
			items = append(items, Item{Status: StatusFail, Title: wt + " has no caBundle", Details: []string{"the apiserver cannot verify the webhook: every call fails (and fails open)"}, Fix: fix})
			continue
		}
		cas, err := ParseCertificates(w.CABundle)
		if err != nil {
			items = append(items, Item{Status: StatusFail, Title: wt + " has an unusable caBundle", Details: []string{err.Error()}, Fix: fix})
			continue
		}
		it := Item{Status: StatusOK, Title: wt + ": caBundle trusts the Secret's certificate", Details: []string{"calls " + w.Target + ", verified for " + w.ServerName}}
		for _, ca := range cas {
			it.Details = append(it.Details, "trusts CA "+describeCA(ca, f.Now))
		}
		if leaf != nil {
			// Whether the bundle trusts the certificate is one question, whether it is
			// valid now another (the Secret's item answers it): ask this one at a time
			// the certificate is valid, so that an expired certificate does not hide a
			// bundle from the wrong CA.
			at := f.Now
			if !f.Now.Before(leaf.NotAfter) || f.Now.Before(leaf.NotBefore) {
				at = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
			}
			if err := VerifyServing(w.CABundle, []*x509.Certificate{leaf}, w.ServerName, at); err != nil {
				it.Status, it.Title = StatusFail, wt+": caBundle does not trust the Secret's certificate"
				it.Details = append(it.Details, err.Error())
				it.Fix = fix
			}
		} else {
			it.Title = wt + ": caBundle present"
		}
		items = append(items, it)
	}
	return items
}

func checkServed(f Facts, leaf *x509.Certificate) Item {
	if f.ServedProblem != "" || len(f.Served) == 0 {
		return Item{Status: StatusFail, Title: "could not read the certificate the webhook serves", Details: nonEmpty(orDefault(f.ServedProblem, "no certificate presented")),
			Fix: "is a webhook replica ready (Service " + f.Namespace + "/" + ServiceName + " endpoints)? locally, pass --webhook-url"}
	}
	served := f.Served[0]
	it := Item{Status: StatusOK, Title: "the webhook serves a certificate every caBundle trusts",
		Details: []string{"read from " + f.ServedFrom, "serving " + describeLeaf(served, f.Now)}}
	for _, c := range f.Configurations {
		for _, w := range c.Webhooks {
			if len(w.CABundle) == 0 {
				continue
			}
			if err := VerifyServing(w.CABundle, f.Served, w.ServerName, f.Now); err != nil {
				it.Status, it.Title = StatusFail, "the webhook serves a certificate that a caBundle does not trust"
				it.Details = append(it.Details, fmt.Sprintf("%s %s webhook %s: %v", c.Kind, c.Name, w.Name, err))
				it.Fix = "every admission to that webhook fails now (and fails open): see the items above"
			}
		}
	}
	if it.Status == StatusOK && leaf != nil && !leaf.Equal(served) {
		it.Status = StatusWarn
		it.Details = append(it.Details, "the Secret holds serial "+Serial(leaf)+": the webhook has not reloaded it yet")
		it.Fix = "normal for a moment after a rotation; if it stays, check the webhook logs (cert-manager mode reloads the mounted files; the kubelet updates them within a minute or two)"
	}
	return it
}

func describeLeaf(c *x509.Certificate, now time.Time) string {
	return fmt.Sprintf("serial %s, expires %s", Serial(c), when(c.NotAfter, now))
}

func describeCA(c *x509.Certificate, now time.Time) string {
	return fmt.Sprintf("%q (expires %s)", c.Subject.CommonName, when(c.NotAfter, now))
}

func names(c *x509.Certificate) []string {
	out := slices.Clone(c.DNSNames)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

// when is a time with how far it is from now, e.g. "2026-05-30T12:00:00Z (in 89d 23h)".
func when(t, now time.Time) string {
	d := t.Sub(now)
	rel := "in " + humanDuration(d)
	if d < 0 {
		rel = humanDuration(-d) + " ago"
	}
	return t.UTC().Format(time.RFC3339) + " (" + rel + ")"
}

func humanDuration(d time.Duration) string {
	d = d.Round(time.Second)
	days := d / (24 * time.Hour)
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %dm", d/time.Hour, (d%time.Hour)/time.Minute)
	}
	return d.String()
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
