package backstop

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
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/isolator-dev/isolator/policy"
)

// FieldManager owns the fields isolator applies with server-side apply.
const FieldManager = "isolator"

// Retry delays after a failed apply; a newer snapshot is applied at once.
const (
	minRetry = time.Second
	maxRetry = time.Minute
)

// Metrics of the reconciler, served with the webhook's (controller-runtime's registry).
var (
	applies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "isolator_backstop_applies_total",
		Help: "Backstop reconciliations after a policy change, by result (success or error). After an error the previous backstop stays in force.",
	}, []string{"result"})
	lastApply = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "isolator_backstop_last_apply_success_timestamp_seconds",
		Help: "Unix time of the last successful backstop reconciliation.",
	})
)

func init() {
	crmetrics.Registry.MustRegister(applies, lastApply)
	applies.WithLabelValues("success")
	applies.WithLabelValues("error")
}

// Reconciler keeps the backstop objects in the cluster equal to the backstop of the
// latest policy snapshot. It runs in the webhook process, on the leader only.
type Reconciler struct {
	c    client.Client
	log  logr.Logger
	opts Options

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
func NewReconciler(c client.Client, log logr.Logger, opts Options) *Reconciler {
	return &Reconciler{c: c, log: log, opts: opts, wake: make(chan struct{}, 1)}
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
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.wake:
		case <-timer:
		}
		r.mu.Lock()
		snap, pending := r.latest, r.pending
		r.pending = false
		r.mu.Unlock()
		if !pending {
			continue
		}
		if err := r.Reconcile(ctx, snap); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			applies.WithLabelValues("error").Inc()
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
		applies.WithLabelValues("success").Inc()
		lastApply.SetToCurrentTime()
		retry, timer = minRetry, nil
	}
}

// Reconcile applies the backstop of snap once and deletes the backstop objects isolator
// owns that it no longer generates.
func (r *Reconciler) Reconcile(ctx context.Context, snap *policy.Snapshot) error {
	vaps, bindings, err := Generate(snap, r.opts)
	if err != nil {
		return fmt.Errorf("generating the backstop: %w", err)
	}
	want := map[string]bool{}
	// Policies before bindings, so that a binding never points at a policy that
	// doesn't exist yet.
	for _, v := range vaps {
		want["policy/"+v.Name] = true
		if err := r.apply(ctx, v); err != nil {
			return fmt.Errorf("applying ValidatingAdmissionPolicy %s: %w", v.Name, err)
		}
	}
	for _, b := range bindings {
		want["binding/"+b.Name] = true
		if err := r.apply(ctx, b); err != nil {
			return fmt.Errorf("applying ValidatingAdmissionPolicyBinding %s: %w", b.Name, err)
		}
	}
	deleted, err := r.deleteStale(ctx, want)
	if err != nil {
		return err
	}
	rules := "0"
	if len(vaps) > 0 {
		rules = vaps[0].Annotations[RulesAnnotation]
	}
	r.log.Info("backstop applied", "policies", len(vaps), "bindings", len(bindings), "rules", rules, "deletedStale", deleted)
	return nil
}

func (r *Reconciler) apply(ctx context.Context, obj any) error {
	m, err := manifest(obj)
	if err != nil {
		return err
	}
	u := &unstructured.Unstructured{Object: m}
	return r.c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldManager), client.ForceOwnership)
}

// deleteStale removes bindings, then policies, that carry isolator's managed-by label
// and the backstop name prefix but are not wanted.
func (r *Reconciler) deleteStale(ctx context.Context, want map[string]bool) (int, error) {
	sel := client.MatchingLabels{ManagedByLabel: ManagedByValue}
	var errs []error
	deleted := 0
	var bl admissionregistrationv1.ValidatingAdmissionPolicyBindingList
	if err := r.c.List(ctx, &bl, sel); err != nil {
		return 0, fmt.Errorf("listing ValidatingAdmissionPolicyBindings: %w", err)
	}
	for i := range bl.Items {
		b := &bl.Items[i]
		if strings.HasPrefix(b.Name, NamePrefix) && !want["binding/"+b.Name] {
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
		if strings.HasPrefix(p.Name, NamePrefix) && !want["policy/"+p.Name] {
			if err := r.c.Delete(ctx, p); err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("deleting stale ValidatingAdmissionPolicy %s: %w", p.Name, err))
				continue
			}
			deleted++
		}
	}
	return deleted, errors.Join(errs...)
}
