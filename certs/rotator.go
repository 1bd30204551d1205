package certs

import (
	"context"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/isolator-dev/isolator/internal/owner"
)

// CacheObjects are what self-managed mode needs in the manager's cache: the one Secret,
// the report Leases, and isolator's two webhook configurations. Merge them into the
// manager's cache.Options.ByObject.
func CacheObjects(namespace string) map[client.Object]cache.ByObject {
	byName := fields.OneTermEqualSelector("metadata.name", WebhookConfigurationName)
	return map[client.Object]cache.ByObject{
		&corev1.Secret{}: {
			Namespaces: map[string]cache.Config{namespace: {}},
			Field:      fields.OneTermEqualSelector("metadata.name", SecretName),
		},
		&coordinationv1.Lease{}: {
			Namespaces: map[string]cache.Config{namespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{ReportLabel: "true"}),
		},
		&admissionregistrationv1.MutatingWebhookConfiguration{}:   {Field: byName},
		&admissionregistrationv1.ValidatingWebhookConfiguration{}: {Field: byName},
	}
}

// Rotator is the self-managed mode's single writer: on the elected leader only, it keeps
// the Secret's CA and serving certificate current (Renewal.Plan) and the webhook
// configurations' caBundle equal to the Secret's ca.crt.
type Rotator struct {
	Namespace string
	Renewal   Renewal
	Metrics   *Metrics
	Log       logr.Logger
	// Resync bounds the time between two looks, whatever happens.
	Resync time.Duration
	// Owner names the MutatingWebhookConfiguration that owns the Secret (package
	// owner), so that removing isolator removes its CA key too. While it does not
	// exist nothing is written. Empty: no owner.
	Owner string

	cache    cache.Cache
	client   client.Client
	reader   client.Reader
	recorder EventRecorder
	now      func() time.Time
}

// NewRotator creates the leader's rotator. reader reads uncached (the manager's
// APIReader); recorder may be nil.
func NewRotator(c cache.Cache, cl client.Client, reader client.Reader, recorder EventRecorder, namespace string, r Renewal, m *Metrics, log logr.Logger) *Rotator {
	return &Rotator{
		Namespace: namespace, Renewal: r, Metrics: m, Log: log, Resync: time.Minute,
		cache: c, client: cl, reader: reader, recorder: recorder, now: time.Now,
	}
}

// NeedLeaderElection is true: one replica writes.
func (r *Rotator) NeedLeaderElection() bool { return true }

// Start reconciles whenever the Secret, a report or a webhook configuration changes, or
// when the plan says a deadline comes, until ctx ends.
func (r *Rotator) Start(ctx context.Context) error {
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	handler := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	objs := []client.Object{&corev1.Secret{}, &coordinationv1.Lease{},
		&admissionregistrationv1.MutatingWebhookConfiguration{}, &admissionregistrationv1.ValidatingWebhookConfiguration{}}
	for _, obj := range objs {
		inf, err := r.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("self-managed certificates: watching %T: %w", obj, err)
		}
		reg, err := inf.AddEventHandler(handler)
		if err != nil {
			return fmt.Errorf("self-managed certificates: watching %T: %w", obj, err)
		}
		if !toolscache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
			return nil
		}
	}
	r.Log.Info("managing the serving certificates", "secret", SecretName, "namespace", r.Namespace)
	backoff := time.Duration(0)
	poke()
	timer := time.NewTimer(r.Resync)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
		case <-timer.C:
		}
		wake, err := r.reconcile(ctx)
		now := r.now()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			backoff = min(max(2*backoff, 200*time.Millisecond), 30*time.Second)
			if !apierrors.IsConflict(err) {
				r.Log.Error(err, "self-managed certificates: retrying", "in", backoff.String())
			}
			wake = now.Add(backoff)
		} else {
			backoff = 0
		}
		d := min(max(wake.Sub(now), 0), r.Resync)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(d)
	}
}

// reconcile is one step: read, plan, write the Secret, inject its bundle, record that.
func (r *Rotator) reconcile(ctx context.Context) (time.Time, error) {
	now := r.now()
	sec := &corev1.Secret{}
	key := types.NamespacedName{Namespace: r.Namespace, Name: SecretName}
	err := r.client.Get(ctx, key, sec)
	create := apierrors.IsNotFound(err)
	if err != nil && !create {
		return now, fmt.Errorf("reading Secret %s: %w", key, err)
	}
	var m *Material
	if create {
		// A new Secret keeps trusting the CAs the configurations already trust, so that
		// replicas still serving from a deleted Secret stay valid until they switch.
		m = &Material{Bundle: r.configuredCAs(ctx, now)}
		sec = &corev1.Secret{}
		sec.Name, sec.Namespace = SecretName, r.Namespace
	} else {
		if owner := sec.Annotations[certManagerCertificateAnnotation]; owner != "" {
			// Never fight cert-manager over its Secret.
			return now.Add(r.Resync), fmt.Errorf("secret %s is written by cert-manager (Certificate %s): run the webhook with --cert-mode=cert-manager, or delete that Certificate and the Secret to let isolator manage its own", key, owner)
		}
		var problems []error
		m, problems = ParseMaterial(sec)
		for _, p := range problems {
			r.Log.Error(p, "self-managed Secret: ignoring a broken entry; it will be replaced", "secret", SecretName)
		}
	}
	replicas, leases, err := ReadReports(ctx, r.client, r.Namespace)
	if err != nil {
		return now, err
	}
	r.deleteExpired(ctx, leases, now)

	before := sec.DeepCopy()
	changes, wake, err := r.Renewal.Plan(m, replicas, now)
	if err != nil {
		return now, fmt.Errorf("planning the serving certificates: %w", err)
	}
	m.WriteTo(sec)
	if r.Owner != "" {
		ref, err := owner.Reference(ctx, r.reader, r.Owner)
		if err != nil {
			return now, fmt.Errorf("secret %s: %w", key, err)
		}
		owner.Set(sec, ref)
	}
	switch {
	case create:
		err = r.client.Create(ctx, sec)
	case !apiequality.Semantic.DeepEqual(before, sec):
		err = r.client.Update(ctx, sec)
	}
	if err != nil {
		return now, fmt.Errorf("writing Secret %s: %w", key, err)
	}
	for _, c := range changes {
		r.Log.Info(c.Message, "secret", SecretName)
		r.event(sec, c.Message)
		if c.Kind != "" {
			r.Metrics.Rotations.WithLabelValues(c.Kind).Inc()
		}
	}

	bundle := m.BundlePEM()
	patched, err := InjectBundle(ctx, r.reader, r.client, bundle)
	if err != nil {
		return now, err
	}
	if patched > 0 {
		r.Log.Info("injected the CA bundle into the webhook configurations", "configurations", patched, "cas", len(m.Bundle))
	}
	if h := BundleHash(bundle); h != m.BundleSHA256 {
		m.BundleSHA256, m.BundleInjectedAt = h, r.now()
		m.WriteTo(sec)
		if err := r.client.Update(ctx, sec); err != nil {
			return now, fmt.Errorf("recording the injected bundle in Secret %s: %w", key, err)
		}
		// The plan waits PropagationDelay from now before a new CA signs.
		if t := m.BundleInjectedAt.Add(r.Renewal.PropagationDelay); t.Before(wake) {
			wake = t
		}
	}
	return wake, nil
}

// configuredCAs are the unexpired CAs that the webhook configurations trust now.
func (r *Rotator) configuredCAs(ctx context.Context, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	add := func(b []byte) {
		cas, err := ParseCertificates(b)
		if err != nil {
			return
		}
		for _, c := range cas {
			if c.IsCA && now.Before(c.NotAfter) && !containsCert(out, c) {
				out = append(out, c)
			}
		}
	}
	mut := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := r.reader.Get(ctx, types.NamespacedName{Name: WebhookConfigurationName}, mut); err == nil {
		for _, w := range mut.Webhooks {
			add(w.ClientConfig.CABundle)
		}
	}
	val := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	if err := r.reader.Get(ctx, types.NamespacedName{Name: WebhookConfigurationName}, val); err == nil {
		for _, w := range val.Webhooks {
			add(w.ClientConfig.CABundle)
		}
	}
	return out
}

// deleteExpired removes reports whose replica stopped renewing them long ago.
func (r *Rotator) deleteExpired(ctx context.Context, leases []coordinationv1.Lease, now time.Time) {
	for i := range leases {
		rep := replicaOf(&leases[i])
		if rep.Expires.IsZero() || now.Sub(rep.Expires) < time.Minute {
			continue
		}
		if err := r.client.Delete(ctx, &leases[i]); client.IgnoreNotFound(err) != nil {
			r.Log.Info("could not delete an expired serving certificate report", "lease", leases[i].Name, "problem", err.Error())
		}
	}
}

func (r *Rotator) event(sec *corev1.Secret, msg string) {
	if r.recorder == nil || sec.UID == "" {
		return
	}
	r.recorder.Eventf(sec, nil, corev1.EventTypeNormal, "CertificateRotation", "Rotate", "%s", msg)
}

// EventRecorder is the part of an events.k8s.io recorder the rotator needs.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}
