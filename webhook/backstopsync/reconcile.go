// Package backstopsync keeps the backstop ValidatingAdmissionPolicy that package
// backstop generates applied in the cluster, following every policy snapshot, from the
// webhook process's leader. It is the only part of the backstop that needs a cluster.
package backstopsync

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/isolator-dev/isolator/backstop"
	"github.com/isolator-dev/isolator/internal/owner"
	"github.com/isolator-dev/isolator/policy"
)

// FieldManager owns the fields isolator applies with server-side apply.
const FieldManager = "isolator"

// Retry delays after a failed apply; a newer snapshot is applied at once.
const (
	minRetry = time.Second
	maxRetry = time.Minute
)

// DefaultResync is how often the backstop of the current snapshot is applied again
// without a policy change: it puts back a backstop someone deleted, or one the garbage
// collector removed because its owner was deleted and created anew.
const DefaultResync = time.Minute

// Metrics are the reconciler's metrics (docs/metrics.md).
type Metrics struct {
	Applies   *prometheus.CounterVec
	LastApply prometheus.Gauge
}

// NewMetrics creates the reconciler's metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_backstop_applies_total",
			Help: "Backstop reconciliations after a policy change and once a minute besides, by result (success or error). After an error the previous backstop stays in force.",
		}, []string{"result"}),
		LastApply: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "isolator_backstop_last_apply_success_timestamp_seconds",
			Help: "Unix time of the last successful backstop reconciliation.",
		}),
	}
	reg.MustRegister(m.Applies, m.LastApply)
	m.Applies.WithLabelValues("success")
	m.Applies.WithLabelValues("error")
	return m
}

// Reconciler keeps the backstop objects in the cluster equal to the backstop of the
// latest policy snapshot. It runs in the webhook process, on the leader only.
type Reconciler struct {
	c       client.Client
	log     logr.Logger
	opts    backstop.Options
	metrics *Metrics

	// owner names the MutatingWebhookConfiguration that owns the backstop objects;
	// ownerReader reads it uncached (one object, get by name).
	owner       string
	ownerReader client.Reader
	// Resync is how often the current snapshot is applied again (DefaultResync).
	Resync time.Duration

	mu      sync.Mutex
	latest  *policy.Snapshot
	pending bool
	wake    chan struct{}
}

var (
	_ manager.Runnable               = (*Reconciler)(nil)
	_ manager.LeaderElectionRunnable = (*Reconciler)(nil)
)

// NewReconciler returns a reconciler that applies through c.
func NewReconciler(c client.Client, log logr.Logger, opts backstop.Options, m *Metrics) *Reconciler {
	return &Reconciler{c: c, log: log, opts: opts, metrics: m, Resync: DefaultResync, wake: make(chan struct{}, 1)}
}

// OwnedBy makes the MutatingWebhookConfiguration named name the owner of every
// backstop object (package owner): removing isolator removes the backstop. Owned this
// way, and not by a pre-delete hook or a finalizer, because it works for every way of
// removing isolator and needs nothing running at removal time. While the owner does not
// exist the reconciler applies nothing.
func (r *Reconciler) OwnedBy(reader client.Reader, name string) {
	r.ownerReader, r.owner = reader, name
}

// ownerReference returns the owner reference every backstop object carries, or nil
// without an owner.
func (r *Reconciler) ownerReference(ctx context.Context) ([]any, error) {
	if r.owner == "" {
		return nil, nil
	}
	ref, err := owner.Reference(ctx, r.ownerReader, r.owner)
	if err != nil {
		return nil, fmt.Errorf("the backstop: %w", err)
	}
	return []any{map[string]any{"apiVersion": ref.APIVersion, "kind": ref.Kind, "name": ref.Name, "uid": string(ref.UID)}}, nil
}

// Update hands the reconciler a new snapshot. It never blocks: snapshots that arrive
// while one is being applied coalesce, and only the latest is applied.
func (r *Reconciler) Update(snap *policy.Snapshot) {
	r.mu.Lock()
	r.latest, r.pending = snap, true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// NeedLeaderElection is true: one writer is enough, and replicas of different versions
// must not fight over the objects during a rolling upgrade.
func (r *Reconciler) NeedLeaderElection() bool { return true }

// Start applies snapshots until ctx ends. A failed apply is retried with backoff
// until it succeeds or a newer snapshot replaces it.
func (r *Reconciler) Start(ctx context.Context) error {
	retry := minRetry
	var timer <-chan time.Time
	resync := time.NewTicker(r.Resync)
	defer resync.Stop()
	for {
		changed := true
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer:
		case <-resync.C:
			changed = false
			r.mu.Lock()
			r.pending = r.pending || r.latest != nil
			r.mu.Unlock()
		}
		r.mu.Lock()
		snap, pending := r.latest, r.pending
		r.pending = false
		r.mu.Unlock()
		if !pending {
			continue
		}
		log := r.log
		if !changed {
			log = r.log.V(1) // the periodic re-apply: quiet unless it fails
		}
		if err := r.reconcile(ctx, snap, log); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			r.metrics.Applies.WithLabelValues("error").Inc()
			r.log.Error(err, "applying the backstop failed; the previous one stays in force", "retryIn", retry)
			r.mu.Lock()
			if !r.pending { // nothing newer: try this one again
				r.pending = true
			}
			r.mu.Unlock()
			timer = time.After(retry)
			retry = min(2*retry, maxRetry)
			continue
		}
		r.metrics.Applies.WithLabelValues("success").Inc()
		r.metrics.LastApply.SetToCurrentTime()
		retry, timer = minRetry, nil
	}
}

// Reconcile applies the backstop of snap once and deletes the backstop objects isolator
// owns that it no longer generates.
func (r *Reconciler) Reconcile(ctx context.Context, snap *policy.Snapshot) error {
	return r.reconcile(ctx, snap, r.log)
}

func (r *Reconciler) reconcile(ctx context.Context, snap *policy.Snapshot, log logr.Logger) error {
	vaps, bindings, err := backstop.Generate(snap, r.opts)
	if err != nil {
		return fmt.Errorf("generating the backstop: %w", err)
	}
	owners, err := r.ownerReference(ctx)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	// Policies before bindings, so that a binding never points at a policy that
	// doesn't exist yet.
	for _, v := range vaps {
		want["policy/"+v.Name] = true
		if err := r.apply(ctx, v, owners); err != nil {
			return fmt.Errorf("applying ValidatingAdmissionPolicy %s: %w", v.Name, err)
		}
	}
	for _, b := range bindings {
		want["binding/"+b.Name] = true
		if err := r.apply(ctx, b, owners); err != nil {
			return fmt.Errorf("applying ValidatingAdmissionPolicyBinding %s: %w", b.Name, err)
		}
	}
	deleted, err := r.deleteStale(ctx, want)
	if err != nil {
		return err
	}
	rules := "0"
	if len(vaps) > 0 {
		rules = vaps[0].Annotations[backstop.RulesAnnotation]
	}
	log.Info("backstop applied", "policies", len(vaps), "bindings", len(bindings), "rules", rules, "deletedStale", deleted)
	return nil
}

func (r *Reconciler) apply(ctx context.Context, obj any, owners []any) error {
	m, err := backstop.Manifest(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: m}
	if owners != nil {
		if err := unstructured.SetNestedSlice(u.Object, owners, "metadata", "ownerReferences"); err != nil {
			return err
		}
	}
	return r.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
}

// deleteStale removes bindings, then policies, that carry isolator's managed-by label
// and the backstop name prefix but are not wanted.
func (r *Reconciler) deleteStale(ctx context.Context, want map[string]bool) (int, error) {
	sel := client.MatchingLabels{backstop.ManagedByLabel: backstop.ManagedByValue}
	var errs []error
	deleted := 0
	var bl admissionregistrationv1.ValidatingAdmissionPolicyBindingList
	if err := r.c.List(ctx, &bl, sel); err != nil {
		return 0, fmt.Errorf("listing ValidatingAdmissionPolicyBindings: %w", err)
	}
	for i := range bl.Items {
		b := &bl.Items[i]
		if strings.HasPrefix(b.Name, backstop.NamePrefix) && !want["binding/"+b.Name] {
			if err := r.c.Delete(ctx, b); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("deleting stale ValidatingAdmissionPolicyBinding %s: %w", b.Name, err))
				continue
			}
			deleted++
		}
	}
	var pl admissionregistrationv1.ValidatingAdmissionPolicyList
	if err := r.c.List(ctx, &pl, sel); err != nil {
		return deleted, fmt.Errorf("listing ValidatingAdmissionPolicies: %w", err)
	}
	for i := range pl.Items {
		p := &pl.Items[i]
		if strings.HasPrefix(p.Name, backstop.NamePrefix) && !want["policy/"+p.Name] {
			if err := r.c.Delete(ctx, p); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("deleting stale ValidatingAdmissionPolicy %s: %w", p.Name, err))
				continue
			}
			deleted++
		}
	}
	return deleted, errors.Join(errs...)
}
