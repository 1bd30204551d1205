package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// certManagerCertificateAnnotation is set by cert-manager on the Secrets it writes.
const certManagerCertificateAnnotation = "cert-manager.io/certificate-name"

// InspectOptions configure Inspect.
type InspectOptions struct {
	Namespace string
	// Mode is ModeCertManager, ModeSelf, or "" to detect it from the Secret.
	Mode string
	// WebhookURL, if set, is dialled directly to read the served certificate (local
	// runs); otherwise the apiserver's service proxy reaches the Service.
	WebhookURL string
	Now        time.Time
}

// Inspect reads everything Diagnose judges. c's scheme must know cert-manager's types;
// cs reaches the service proxy. Read errors become problems in the facts, so that one
// missing object does not hide the others.
func Inspect(ctx context.Context, c client.Client, cs kubernetes.Interface, o InspectOptions) Facts {
	f := Facts{Namespace: o.Namespace, Now: o.Now, Mode: o.Mode}
	if f.Now.IsZero() {
		f.Now = time.Now()
	}
	sec := &corev1.Secret{}
	switch err := c.Get(ctx, types.NamespacedName{Namespace: o.Namespace, Name: SecretName}, sec); {
	case apierrors.IsNotFound(err):
		f.SecretProblem = "not found"
	case err != nil:
		f.SecretProblem = err.Error()
	default:
		f.Secret = sec
	}

	certName := ""
	if f.Secret != nil {
		certName = f.Secret.Annotations[certManagerCertificateAnnotation]
	}
	cert, certProblem, crdMissing := findCertificate(ctx, c, o.Namespace, certName)
	if f.Mode == "" {
		switch {
		case f.Secret != nil && f.Secret.Annotations[AnnotationMode] == ModeSelf:
			f.Mode = ModeSelf
		case certName != "" || cert != nil:
			f.Mode = ModeCertManager
		case crdMissing:
			f.Mode = ModeSelf
		default:
			f.Mode = ModeCertManager
		}
	}
	f.Certificate, f.CertificateProblem = cert, certProblem

	f.Configurations = readConfigurations(ctx, c)
	if f.Mode == ModeSelf {
		reps, _, err := ReadReports(ctx, c, o.Namespace)
		if err != nil {
			f.ReplicasProblem = err.Error()
		}
		f.Replicas = reps
	}

	if o.WebhookURL != "" {
		f.ServedFrom = o.WebhookURL + " (TLS handshake)"
		f.Served, f.ServedProblem = dialServed(ctx, o.WebhookURL, ServiceName+"."+o.Namespace+".svc")
	} else {
		f.ServedFrom = fmt.Sprintf("service %s/%s through the apiserver proxy (%s)", o.Namespace, ServiceName, ServingCertificatePath)
		f.Served, f.ServedProblem = proxyServed(ctx, cs, o.Namespace)
	}
	return f
}

func findCertificate(ctx context.Context, c client.Client, namespace, name string) (*cmapi.Certificate, string, bool) {
	if name != "" {
		cert := &cmapi.Certificate{}
		err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, cert)
		switch {
		case err == nil:
			return cert, "", false
		case meta.IsNoMatchError(err):
			return nil, "cert-manager's CRDs are not installed", true
		case apierrors.IsNotFound(err):
			return nil, fmt.Sprintf("the Secret names Certificate %s/%s, which does not exist", namespace, name), false
		}
		return nil, err.Error(), false
	}
	var list cmapi.CertificateList
	if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, "cert-manager's CRDs are not installed", true
		}
		return nil, err.Error(), false
	}
	for i := range list.Items {
		if list.Items[i].Spec.SecretName == SecretName {
			return &list.Items[i], "", false
		}
	}
	return nil, fmt.Sprintf("no Certificate in %s has spec.secretName %s", namespace, SecretName), false
}

func readConfigurations(ctx context.Context, c client.Client) []ConfigurationFacts {
	key := types.NamespacedName{Name: WebhookConfigurationName}
	mut := ConfigurationFacts{Kind: "MutatingWebhookConfiguration", Name: WebhookConfigurationName}
	m := &admissionregistrationv1.MutatingWebhookConfiguration{}
	switch err := c.Get(ctx, key, m); {
	case apierrors.IsNotFound(err):
		mut.Missing = true
	case err != nil:
		mut.Problem = err.Error()
	default:
		for _, w := range m.Webhooks {
			mut.Webhooks = append(mut.Webhooks, webhookFacts(w.Name, w.ClientConfig))
		}
	}
	val := ConfigurationFacts{Kind: "ValidatingWebhookConfiguration", Name: WebhookConfigurationName}
	v := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	switch err := c.Get(ctx, key, v); {
	case apierrors.IsNotFound(err):
		val.Missing = true
	case err != nil:
		val.Problem = err.Error()
	default:
		for _, w := range v.Webhooks {
			val.Webhooks = append(val.Webhooks, webhookFacts(w.Name, w.ClientConfig))
		}
	}
	return []ConfigurationFacts{mut, val}
}

func webhookFacts(name string, cc admissionregistrationv1.WebhookClientConfig) WebhookFacts {
	w := WebhookFacts{Name: name, CABundle: cc.CABundle}
	switch {
	case cc.Service != nil:
		w.ServerName, w.Target = ServerNameFor(cc.Service.Name, cc.Service.Namespace, "")
	case cc.URL != nil:
		w.ServerName, w.Target = ServerNameFor("", "", *cc.URL)
	}
	return w
}

// dialServed reads the chain presented in a TLS handshake with rawURL. It does not verify
// it: Diagnose does, against each caBundle.
func dialServed(ctx context.Context, rawURL, serverName string) ([]*x509.Certificate, string) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return nil, fmt.Sprintf("--webhook-url %q is not a URL like https://127.0.0.1:9443", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		ServerName: serverName,
		// Verified by Diagnose against each caBundle, the way the apiserver does.
		InsecureSkipVerify: true,
	}}
	conn, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, fmt.Sprintf("TLS handshake with %s: %v", host, err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates, ""
}

// proxyServed asks a ready replica, through the apiserver's service proxy, for the chain
// it serves.
func proxyServed(ctx context.Context, cs kubernetes.Interface, namespace string) ([]*x509.Certificate, string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	body, err := cs.CoreV1().Services(namespace).ProxyGet("https", ServiceName, "https", ServingCertificatePath, nil).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Sprintf("GET %s through the service proxy: %v", ServingCertificatePath, err)
	}
	chain, err := ParseCertificates(body)
	if err != nil {
		return nil, fmt.Sprintf("the webhook's %s answer: %v", ServingCertificatePath, err)
	}
	return chain, ""
}
