//go:build e2e

// Package certs tests isolator's serving certificates against a real kube-apiserver: the
// self-managed mode end to end (the apiserver verifies the webhook with the caBundle the
// webhook injected itself), forced leaf and CA rotations under continuous pod creation
// with two replicas, the kubelet-style file swap of cert-manager mode, and
// `isolator certs check` against cert-manager's real CRDs.
package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/isolator-dev/isolator/certs"
	"github.com/isolator-dev/isolator/e2e/harness"
)

var cp *harness.ControlPlane

func TestMain(m *testing.M) {
	// The apiserver's webhook client speaks HTTP/2 by default and then sends every
	// admission over one long-lived connection, so a certificate change would only be
	// seen by the handshakes that happen to follow it. With HTTP/1.1 it opens a connection
	// per concurrent request beyond its idle pool, which spreads admissions over both
	// replicas behind the relay and makes rotations meet many fresh handshakes: a harder
	// test than a default cluster. (DISABLE_HTTP2 is read by k8s.io/apimachinery's
	// transport defaults; every process started here inherits it.)
	os.Setenv("DISABLE_HTTP2", "1")
	os.Exit(harness.RunTests(m, harness.Options{}, &cp, setupCluster))
}

// setupCluster applies the runtime classes and the example policy from manifests/.
func setupCluster(ctx context.Context, cp *harness.ControlPlane) error {
	if _, err := cp.CreateNamespace(ctx, harness.IsolatorNamespace, nil); err != nil {
		return err
	}
	dir, err := harness.ManifestsDir()
	if err != nil {
		return err
	}
	if out, err := cp.Kubectl(ctx, nil, "apply", "--server-side", "-k", filepath.Join(dir, "runtimeclasses")); err != nil {
		return fmt.Errorf("applying the runtime classes: %w\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, nil, "apply", "-f", filepath.Join(dir, "examples", "policies.yaml")); err != nil {
		return fmt.Errorf("applying the example policy: %w\n%s", err, out)
	}
	return nil
}

func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var nsSeq atomic.Int64

// namespaces creates a tenant namespace (the example policy sandboxes tenant-*: kata-rc)
// and a plain one (the policy's default: runc-rc) for a test.
func namespaces(t *testing.T, ctx context.Context, prefix string) []target {
	t.Helper()
	// A fresh suffix each time: a namespace of an earlier run (-count=2) may still be
	// terminating.
	prefix = fmt.Sprintf("%s-%d", prefix, nsSeq.Add(1)+time.Now().UnixMilli()%100000)
	out := []target{{ns: "tenant-" + prefix, class: "kata-rc"}, {ns: prefix + "-plain", class: "runc-rc"}}
	for _, tg := range out {
		if _, err := cp.CreateNamespace(ctx, tg.ns, nil); err != nil {
			t.Fatal(err)
		}
		if err := harness.WaitForDefaultServiceAccount(ctx, cp.Client(), tg.ns); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, tg := range out {
			_ = cp.Client().CoreV1().Namespaces().Delete(context.Background(), tg.ns, metav1.DeleteOptions{})
		}
	})
	return out
}

// registerWebhooks installs isolator's webhook configurations from manifests/base,
// calling baseURL instead of the Service, with caBundle (nil: the webhook injects it).
func registerWebhooks(t *testing.T, ctx context.Context, baseURL string, caBundle []byte) {
	t.Helper()
	dir, err := harness.ManifestsDir()
	if err != nil {
		t.Fatal(err)
	}
	target := &harness.Isolator{URL: baseURL, CABundle: caBundle}
	if err := target.Register(ctx, cp.Client(), filepath.Join(dir, "base")); err != nil {
		t.Fatal(err)
	}
}

// cleanCertObjects removes what a test leaves behind: webhook configurations, the Secret,
// report Leases and the leader Lease, so the next test starts from nothing.
func cleanCertObjects(ctx context.Context) {
	c := cp.Client()
	_ = c.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, certs.WebhookConfigurationName, metav1.DeleteOptions{})
	_ = c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(ctx, certs.WebhookConfigurationName, metav1.DeleteOptions{})
	_ = c.CoreV1().Secrets(harness.IsolatorNamespace).Delete(ctx, certs.SecretName, metav1.DeleteOptions{})
	_ = c.CoordinationV1().Leases(harness.IsolatorNamespace).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: certs.ReportLabel + "=true"})
	_ = c.CoordinationV1().Leases(harness.IsolatorNamespace).Delete(ctx, "isolator-webhook", metav1.DeleteOptions{})
}

// startIsolator runs one webhook replica and stops it when the test ends.
func startIsolator(t *testing.T, ctx context.Context, opts harness.IsolatorOptions) *harness.Isolator {
	t.Helper()
	iso, err := cp.StartIsolator(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iso.Stop(harness.DefaultStopGrace) })
	return iso
}

func waitReady(t *testing.T, ctx context.Context, iso *harness.Isolator) {
	t.Helper()
	if err := harness.WaitReady(ctx, iso.Process, harness.ReadyCheck{URL: iso.HealthURL + "/readyz"}); err != nil {
		t.Fatal(err)
	}
}

// secret reads the self-managed Secret.
func secret(ctx context.Context) (*corev1.Secret, error) {
	return cp.Client().CoreV1().Secrets(harness.IsolatorNamespace).Get(ctx, certs.SecretName, metav1.GetOptions{})
}

// configuredBundles returns the caBundle of every isolator webhook.
func configuredBundles(ctx context.Context) ([][]byte, error) {
	api := cp.Client().AdmissionregistrationV1()
	m, err := api.MutatingWebhookConfigurations().Get(ctx, certs.WebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	v, err := api.ValidatingWebhookConfigurations().Get(ctx, certs.WebhookConfigurationName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var out [][]byte
	for _, w := range m.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	for _, w := range v.Webhooks {
		out = append(out, w.ClientConfig.CABundle)
	}
	return out, nil
}

// waitInjected waits until every webhook's caBundle is the Secret's ca.crt.
func waitInjected(t *testing.T, ctx context.Context) []byte {
	t.Helper()
	var bundle []byte
	err := harness.WaitFor(ctx, time.Minute, "the caBundle injected into both webhook configurations", func(ctx context.Context) (bool, error) {
		s, err := secret(ctx)
		if err != nil {
			return false, err
		}
		bundle = s.Data[corev1.ServiceAccountRootCAKey]
		got, err := configuredBundles(ctx)
		if err != nil {
			return false, err
		}
		for _, b := range got {
			if len(bundle) == 0 || !bytes.Equal(b, bundle) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return bundle
}

// target is a namespace and the class the example policy decides for pods in it.
type target struct{ ns, class string }

func podFor(ns string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "load-", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:1"}}},
	}
}

// createPod creates one pod and says whether it got its decided class from the webhook.
func createPod(ctx context.Context, tg target) error {
	pod, err := cp.Client().CoreV1().Pods(tg.ns).Create(ctx, podFor(tg.ns), metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create in %s: %w", tg.ns, err)
	}
	if got := ptr.Deref(pod.Spec.RuntimeClassName, ""); got != tg.class || pod.Annotations["isolator.dev/runtime-class"] != tg.class {
		return fmt.Errorf("pod %s/%s got runtimeClassName %q (annotation %q), want %q: the webhook did not answer (it fails open)",
			tg.ns, pod.Name, got, pod.Annotations["isolator.dev/runtime-class"], tg.class)
	}
	return nil
}

// load creates pods from several goroutines until stopped, and counts every outcome.
type load struct {
	created, failed atomic.Int64
	mu              sync.Mutex
	errs            []string
	cancel          context.CancelFunc
	wg              sync.WaitGroup
}

func startLoad(ctx context.Context, targets []target, workers int) *load {
	l := &load{}
	ctx, l.cancel = context.WithCancel(ctx)
	for i := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tg := targets[i%len(targets)]
			for ctx.Err() == nil {
				err := createPod(ctx, tg)
				if ctx.Err() != nil {
					return // cut off by stop: neither a success nor a failure
				}
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
					}
					l.mu.Unlock()
					continue
				}
				l.created.Add(1)
			}
		}()
	}
	return l
}

func (l *load) stop() { l.cancel(); l.wg.Wait() }

func (l *load) check(t *testing.T, what string) {
	t.Helper()
	created, failed := l.created.Load(), l.failed.Load()
	t.Logf("%s: %d pods created, each with its decided runtime class; %d failed", what, created, failed)
	fmt.Printf("RESULT %s: pods created=%d failed=%d\n", what, created, failed)
	if failed > 0 {
		t.Errorf("%s: %d of %d admissions failed; first ones:\n%s", what, failed, created+failed, strings.Join(l.errs, "\n"))
	}
	if created == 0 {
		t.Errorf("%s: no pod was created", what)
	}
}

// prober makes fresh TLS handshakes with each replica and verifies them the way the
// apiserver does on a new connection: against the caBundle of the mutating webhook
// configuration, read just before, for the URL's host. Together with the pod load it
// covers the replica that the apiserver's pooled connections may not reach.
type prober struct {
	handshakes, failed atomic.Int64
	mu                 sync.Mutex
	errs               []string
	cancel             context.CancelFunc
	wg                 sync.WaitGroup
}

func startProber(ctx context.Context, addrs ...string) *prober {
	p := &prober{}
	ctx, p.cancel = context.WithCancel(ctx)
	for _, addr := range addrs {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for ctx.Err() == nil {
				err := probe(ctx, addr)
				if ctx.Err() != nil {
					return
				}
				p.handshakes.Add(1)
				if err != nil {
					p.failed.Add(1)
					p.mu.Lock()
					if len(p.errs) < 10 {
						p.errs = append(p.errs, time.Now().Format("15:04:05.000")+" "+addr+": "+err.Error())
					}
					p.mu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	return p
}

func probe(ctx context.Context, addr string) error {
	bundles, err := configuredBundles(ctx)
	if err != nil || len(bundles) == 0 {
		return fmt.Errorf("reading the caBundle: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundles[0]) {
		return errors.New("the mutating webhook's caBundle holds no certificate")
	}
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return conn.Close()
}

func (p *prober) stop() { p.cancel(); p.wg.Wait() }

func (p *prober) check(t *testing.T, what string) {
	t.Helper()
	n, failed := p.handshakes.Load(), p.failed.Load()
	t.Logf("%s: %d fresh TLS handshakes verified against the configured caBundle; %d failed", what, n, failed)
	fmt.Printf("RESULT %s: handshakes=%d failed=%d\n", what, n, failed)
	if failed > 0 {
		t.Errorf("%s: %d of %d handshakes failed; first ones:\n%s", what, failed, n, strings.Join(p.errs, "\n"))
	}
	if n == 0 {
		t.Errorf("%s: no handshake was made", what)
	}
}

// servedLeaf is the certificate addr presents in a TLS handshake.
func servedLeaf(ctx context.Context, addr string) (*x509.Certificate, error) {
	d := &tls.Dialer{Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec // only reads the certificate
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0], nil
}

func hostPort(rawURL string) string { return strings.TrimPrefix(rawURL, "https://") }

// relay spreads TCP connections round-robin over the replicas, as a Service does; TLS
// stays end to end between the apiserver and each replica.
type relay struct {
	ln       net.Listener
	backends []string
	n        atomic.Uint64
	wg       sync.WaitGroup
}

func startRelay(t *testing.T, backends ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, backends: backends}
	r.wg.Add(1)
	go r.serve()
	t.Cleanup(func() { _ = ln.Close(); r.wg.Wait() })
	return ln.Addr().String()
}

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.splice(c)
	}
}

func (r *relay) splice(c net.Conn) {
	defer c.Close()
	start := r.n.Add(1)
	var b net.Conn
	for i := range r.backends {
		var err error
		if b, err = net.DialTimeout("tcp", r.backends[(int(start)+i)%len(r.backends)], 2*time.Second); err == nil {
			break
		}
	}
	if b == nil {
		return
	}
	defer b.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
}

// isolatorCLI runs the isolator binary under test and returns its output and exit code.
func isolatorCLI(ctx context.Context, args ...string) (string, int, error) {
	bin, err := harness.IsolatorBinary()
	if err != nil {
		return "", -1, err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode(), nil
	}
	if err != nil {
		return string(out), -1, err
	}
	return string(out), 0, nil
}

// metricValue reads one sample of the Prometheus text exposition, e.g.
// metricValue(text, `isolator_certs_rotations_total{kind="ca"}`).
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// monitor watches the Secret, both webhook configurations and the replicas' reports,
// and checks the rotation invariants on every change it sees, so that an ordering bug is
// caught even when no admission happens to fall into its window:
//   - the Secret never holds a serving certificate whose CA has not been in both
//     configurations' caBundles for the propagation delay (less some watch jitter);
//   - a CA leaves a configuration's caBundle only when no live replica reports serving a
//     certificate it signed, and the Secret's certificate is not one of them.
type monitor struct {
	delay      time.Duration
	mu         sync.Mutex
	since      map[string]map[string]time.Time // configuration kind -> CA key ID -> since
	violations []string
	checked    atomic.Int64
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

// watchJitter is how much later than the leader a watch may see a configuration change.
const watchJitter = 500 * time.Millisecond

func startMonitor(t *testing.T, ctx context.Context, delay time.Duration) *monitor {
	t.Helper()
	m := &monitor{delay: delay, since: map[string]map[string]time.Time{"mutating": {}, "validating": {}}}
	ctx, m.cancel = context.WithCancel(ctx)
	c := cp.Client()
	// ResourceVersion "0" starts from the apiserver's watch cache: its state of these
	// objects is current (every change to them passes through it), while an unset version
	// would wait for etcd progress notifications that Debian's etcd 3.4 does not send.
	byName := metav1.ListOptions{FieldSelector: "metadata.name=" + certs.WebhookConfigurationName, ResourceVersion: "0"}
	mw, err := c.AdmissionregistrationV1().MutatingWebhookConfigurations().Watch(ctx, byName)
	if err != nil {
		t.Fatal(err)
	}
	vw, err := c.AdmissionregistrationV1().ValidatingWebhookConfigurations().Watch(ctx, byName)
	if err != nil {
		t.Fatal(err)
	}
	sw, err := c.CoreV1().Secrets(harness.IsolatorNamespace).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + certs.SecretName, ResourceVersion: "0"})
	if err != nil {
		t.Fatal(err)
	}
	// What the configurations trust when the monitor starts counts as trusted long ago,
	// whichever watch delivers its first event first.
	bundles, err := configuredBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for id := range caIDs(bundles[:1]) {
		m.since["mutating"][id] = time.Time{}
	}
	for id := range caIDs(bundles[1:]) {
		m.since["validating"][id] = time.Time{}
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer mw.Stop()
		defer vw.Stop()
		defer sw.Stop()
		first := map[string]bool{"mutating": true, "validating": true}
		for {
			var ev watch.Event
			var ok bool
			select {
			case <-ctx.Done():
				return
			case ev, ok = <-mw.ResultChan():
			case ev, ok = <-vw.ResultChan():
			case ev, ok = <-sw.ResultChan():
			}
			if !ok || ev.Type == watch.Error {
				m.mu.Lock()
				m.violate("a watch ended early (%v); the invariants were not checked to the end", ev.Object)
				m.mu.Unlock()
				return
			}
			switch o := ev.Object.(type) {
			case *admissionregistrationv1.MutatingWebhookConfiguration:
				var bundles [][]byte
				for _, w := range o.Webhooks {
					bundles = append(bundles, w.ClientConfig.CABundle)
				}
				m.configChanged(ctx, "mutating", bundles, first["mutating"])
				first["mutating"] = false
			case *admissionregistrationv1.ValidatingWebhookConfiguration:
				var bundles [][]byte
				for _, w := range o.Webhooks {
					bundles = append(bundles, w.ClientConfig.CABundle)
				}
				m.configChanged(ctx, "validating", bundles, first["validating"])
				first["validating"] = false
			case *corev1.Secret:
				m.secretChanged(o)
			}
		}
	}()
	return m
}

// caIDs are the key IDs of the CAs every bundle holds.
func caIDs(bundles [][]byte) map[string]bool {
	out := map[string]bool{}
	for i, b := range bundles {
		cas, _ := certs.ParseCertificates(b)
		ids := map[string]bool{}
		for _, c := range cas {
			ids[certs.KeyID(c.SubjectKeyId)] = true
		}
		if i == 0 {
			out = ids
			continue
		}
		for id := range out {
			if !ids[id] {
				delete(out, id)
			}
		}
	}
	return out
}

func (m *monitor) violate(format string, args ...any) {
	m.violations = append(m.violations, time.Now().Format("15:04:05.000")+" "+fmt.Sprintf(format, args...))
}

func (m *monitor) configChanged(ctx context.Context, kind string, bundles [][]byte, initial bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	ids := caIDs(bundles)
	for id := range ids {
		if _, ok := m.since[kind][id]; !ok {
			if initial {
				m.since[kind][id] = time.Time{} // trusted before the monitor started
			} else {
				m.since[kind][id] = now
			}
		}
	}
	for id := range m.since[kind] {
		if ids[id] {
			continue
		}
		delete(m.since[kind], id)
		m.checked.Add(1)
		// Reports are written before the leader decides, so a fresh list shows them.
		leases, err := cp.Client().CoordinationV1().Leases(harness.IsolatorNamespace).List(ctx, metav1.ListOptions{LabelSelector: certs.ReportLabel + "=true"})
		if err != nil {
			m.violate("listing reports after CA %s left the %s configuration: %v", id, kind, err)
			continue
		}
		for _, l := range leases.Items {
			live := l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil &&
				now.Before(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second))
			if !live {
				continue
			}
			if l.Annotations[certs.ReportIssuerAnnotation] == id {
				m.violate("CA %s left the %s caBundle while replica %s still serves serial %s it signed", id, kind, l.Name, l.Annotations[certs.ReportSerialAnnotation])
			}
			if since, err := time.Parse(time.RFC3339Nano, l.Annotations[certs.ReportSinceAnnotation]); err != nil || !since.Before(now) {
				m.violate("CA %s left the %s caBundle before replica %s had reported switching (serving since %q)", id, kind, l.Name, l.Annotations[certs.ReportSinceAnnotation])
			}
		}
		if s, err := secret(ctx); err == nil {
			// The leader waits RetireGrace (here delay + TTL/3 = 4s) after the new CA took
			// over before removing the old one; a faster removal skipped that wait.
			if since, err := time.Parse(time.RFC3339Nano, s.Annotations[certs.AnnotationSignerSince]); err == nil && now.Sub(since) < m.delay-watchJitter {
				m.violate("CA %s left the %s caBundle %s after the new CA took over", id, kind, now.Sub(since))
			}
			if leaf, err := certs.ParseCertificates(s.Data[corev1.TLSCertKey]); err == nil && certs.KeyID(leaf[0].AuthorityKeyId) == id {
				m.violate("CA %s left the %s caBundle while the Secret's serving certificate is from it", id, kind)
			}
		}
	}
}

func (m *monitor) secretChanged(s *corev1.Secret) {
	leaf, err := certs.ParseCertificates(s.Data[corev1.TLSCertKey])
	if err != nil {
		return // no serving certificate yet
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checked.Add(1)
	id := certs.KeyID(leaf[0].AuthorityKeyId)
	now := time.Now()
	for _, kind := range []string{"mutating", "validating"} {
		since, ok := m.since[kind][id]
		switch {
		case !ok:
			m.violate("Secret serves serial %s from CA %s, which the %s caBundle does not hold", certs.Serial(leaf[0]), id, kind)
		case !since.IsZero() && now.Sub(since) < m.delay-watchJitter:
			m.violate("Secret serves serial %s from CA %s, in the %s caBundle for only %s (propagation delay %s)", certs.Serial(leaf[0]), id, kind, now.Sub(since), m.delay)
		}
	}
}

func (m *monitor) stop() { m.cancel(); m.wg.Wait() }

func (m *monitor) check(t *testing.T, what string) {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	t.Logf("%s: %d Secret versions and CA removals checked against the rotation invariants; %d violations", what, m.checked.Load(), len(m.violations))
	if len(m.violations) > 0 {
		t.Errorf("%s: rotation invariants violated:\n%s", what, strings.Join(m.violations, "\n"))
	}
	if m.checked.Load() == 0 {
		t.Errorf("%s: the monitor checked nothing", what)
	}
}

// metricSum adds up every sample of a metric family, whatever its labels.
func metricSum(text, name string) float64 {
	sum := 0.0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// exposeAsService makes iso reachable as Service isolator-webhook (port https) through the
// apiserver's service proxy. There is no kubelet, so it stands in for what one would
// publish: a Pod whose status carries this machine's address, and an EndpointSlice naming
// that Pod and the webhook's port. The proxy refuses loopback addresses, so this needs a
// non-loopback IPv4 address on the machine.
func exposeAsService(t *testing.T, ctx context.Context, iso *harness.Isolator) {
	t.Helper()
	ip := hostIP(t)
	_, portStr, err := net.SplitHostPort(hostPort(iso.URL))
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	ns := harness.IsolatorNamespace
	c := cp.Client()
	if err := harness.WaitForDefaultServiceAccount(ctx, c, ns); err != nil {
		t.Fatal(err)
	}
	pod, err := c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "isolator-webhook-", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "webhook", Image: "isolator:test"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status.PodIP, pod.Status.PodIPs = ip, []corev1.PodIP{{IP: ip}}
	if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: certs.ServiceName, Namespace: ns},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "https", Port: 443, TargetPort: intstr.FromInt32(int32(port))}}},
	}
	if _, err := c.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: certs.ServiceName + "-test", Namespace: ns,
			Labels: map[string]string{discoveryv1.LabelServiceName: certs.ServiceName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID}}},
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("https"), Port: ptr.To(int32(port)), Protocol: ptr.To(corev1.ProtocolTCP)}},
	}
	if _, err := c.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		bg := context.Background()
		_ = c.DiscoveryV1().EndpointSlices(ns).Delete(bg, slice.Name, metav1.DeleteOptions{})
		_ = c.CoreV1().Services(ns).Delete(bg, svc.Name, metav1.DeleteOptions{})
		_ = c.CoreV1().Pods(ns).Delete(bg, pod.Name, metav1.DeleteOptions{})
	})
}

// hostIP is a non-loopback IPv4 address of this machine.
func hostIP(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Skip("no non-loopback IPv4 address: the apiserver's service proxy cannot reach a webhook on loopback")
	return ""
}
