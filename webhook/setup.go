package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/isolator-dev/isolator/backstop"
	"github.com/isolator-dev/isolator/policy"
	"github.com/isolator-dev/isolator/webhook/backstopsync"
)

// CacheOptions limits the manager's cache to what the webhook reads: policy ConfigMaps
// (in its own namespace, or with teams in every namespace), and only the metadata (name
// and labels) of Namespaces and RuntimeClasses.
func CacheOptions(namespace string, teams bool) cache.Options {
	keepNameAndLabels := func(in any) (any, error) {
		if m, ok := in.(*metav1.PartialObjectMetadata); ok {
			return &metav1.PartialObjectMetadata{TypeMeta: m.TypeMeta, ObjectMeta: metav1.ObjectMeta{
				Name: m.Name, Labels: m.Labels, ResourceVersion: m.ResourceVersion, UID: m.UID,
			}}, nil
		}
		return in, nil
	}
	return cache.Options{
		ByObject: map[client.Object]cache.ByObject{
			&corev1.ConfigMap{}: {
				Namespaces: configMapNamespaces(namespace, teams),
				Label:      labels.SelectorFromSet(labels.Set{policy.PolicyLabel: "true"}),
				Transform:  cache.TransformStripManagedFields(),
			},
			partial(namespaceGVK):    {Transform: keepNameAndLabels},
			partial(runtimeClassGVK): {Transform: keepNameAndLabels},
		},
	}
}

func configMapNamespaces(namespace string, teams bool) map[string]cache.Config {
	if teams {
		return map[string]cache.Config{cache.AllNamespaces: {}}
	}
	return map[string]cache.Config{namespace: {}}
}

func partial(gvk schema.GroupVersionKind) *metav1.PartialObjectMetadata {
	p := &metav1.PartialObjectMetadata{}
	p.SetGroupVersionKind(gvk)
	return p
}

// imageCacheEntries bounds the normalised-image cache: about 100 bytes an entry.
const imageCacheEntries = 50000

// Options configure Setup.
type Options struct {
	// Namespace holds the policy ConfigMaps.
	Namespace string
	// CertLoaded reports whether the serving certificate is loaded, for /readyz.
	CertLoaded func() bool
	// Metrics and BackstopMetrics are registered by the caller, in one place per binary
	// role (NewMetrics(reg)); nil makes and registers them with controller-runtime's
	// registry.
	Metrics         *Metrics
	BackstopMetrics *backstopsync.Metrics
	// Backstop reconciles the fail-closed ValidatingAdmissionPolicy backstop from every
	// new policy, on the leader.
	Backstop bool
	// BackstopOwner names the MutatingWebhookConfiguration that owns the backstop
	// objects, so that removing isolator removes them (backstopsync.Reconciler.OwnedBy).
	// Empty: no owner.
	BackstopOwner string
	// TeamPolicies reads policy ConfigMaps in every namespace: each is its namespace's
	// team policy. Off, only Namespace's count.
	TeamPolicies bool
}

// Webhook is the admission side wired into a manager.
type Webhook struct {
	Store          *Store
	Namespaces     *MetaIndex
	RuntimeClasses *MetaIndex
	Metrics        *Metrics

	opts         Options
	cache        cache.Cache
	reader       client.Reader
	shuttingDown atomic.Bool
}

// Setup registers the pod mutator and the policy validator with the manager's webhook
// server, and the policy store as a runnable on every replica.
func Setup(mgr manager.Manager, opts Options) (*Webhook, error) {
	if opts.Namespace == "" {
		return nil, errors.New("the namespace of the policy ConfigMaps is required (--namespace)")
	}
	m := opts.Metrics
	if m == nil {
		m = NewMetrics(crmetrics.Registry)
	}
	log := ctrl.Log.WithName("policy")
	w := &Webhook{
		Store:          NewStore(m, mgr.GetEventRecorder("isolator-webhook"), log),
		Namespaces:     NewMetaIndex(namespaceGVK, mgr.GetAPIReader()),
		RuntimeClasses: NewMetaIndex(runtimeClassGVK, mgr.GetAPIReader()),
		Metrics:        m,
		opts:           opts,
		cache:          mgr.GetCache(),
		reader:         mgr.GetClient(),
	}
	w.Store.Namespace = opts.Namespace
	srv := mgr.GetWebhookServer()
	srv.Register(MutatePath, &PodMutator{
		Policy: w.Store.Snapshot, Namespaces: w.Namespaces, RuntimeClasses: w.RuntimeClasses, Metrics: m,
		Images: policy.NewImageCache(imageCacheEntries),
	})
	srv.Register(ValidatePath, &admission.Webhook{Handler: &PolicyValidator{
		Store: w.Store, RuntimeClasses: w.RuntimeClasses, Metrics: m,
	}})
	if err := mgr.Add(w); err != nil {
		return nil, err
	}
	if opts.Backstop {
		// The store swaps in its first policy only after a full list of the ConfigMaps,
		// so the backstop is never replaced by that of an empty policy at start-up.
		bm := opts.BackstopMetrics
		if bm == nil {
			bm = backstopsync.NewMetrics(crmetrics.Registry)
		}
		rec := backstopsync.NewReconciler(mgr.GetClient(), ctrl.Log.WithName("backstop"), backstop.Options{Namespace: opts.Namespace}, bm)
		if opts.BackstopOwner != "" {
			rec.OwnedBy(mgr.GetAPIReader(), opts.BackstopOwner)
		}
		if err := mgr.Add(rec); err != nil {
			return nil, err
		}
		w.Store.OnSwap(rec.Update)
	}
	if err := mgr.AddReadyzCheck("isolator", w.ReadyCheck); err != nil {
		return nil, err
	}
	return w, nil
}

// ReadyCheck is /readyz: ready once the certificate, the policies and the informers are
// loaded, and no longer ready once shutdown has begun.
func (w *Webhook) ReadyCheck(_ *http.Request) error {
	switch {
	case w.shuttingDown.Load():
		return errors.New("shutting down")
	case w.opts.CertLoaded != nil && !w.opts.CertLoaded():
		return errors.New("serving certificate not loaded yet")
	case !w.Namespaces.Synced() || !w.RuntimeClasses.Synced():
		return errors.New("namespace and RuntimeClass informers not synced yet")
	case !w.Store.Ready():
		return errors.New("policy ConfigMaps not loaded yet")
	}
	return nil
}

// ShutDown turns readiness off, first thing on SIGTERM, so that endpoints drain before
// the server stops.
func (w *Webhook) ShutDown() { w.shuttingDown.Store(true) }

// NeedLeaderElection is false: every replica keeps its own policy and serves.
func (w *Webhook) NeedLeaderElection() bool { return false }

// Start feeds the namespace and RuntimeClass indexes and keeps the policy in step with
// the ConfigMaps until ctx ends.
func (w *Webhook) Start(ctx context.Context) error {
	for _, ix := range []*MetaIndex{w.Namespaces, w.RuntimeClasses} {
		inf, err := w.cache.GetInformer(ctx, partial(ix.gvk))
		if err != nil {
			return fmt.Errorf("starting the %s informer: %w", ix.gvk.Kind, err)
		}
		reg, err := inf.AddEventHandler(ix.handler())
		if err != nil {
			return fmt.Errorf("watching %ss: %w", ix.gvk.Kind, err)
		}
		go func(ix *MetaIndex, reg toolscache.ResourceEventHandlerRegistration) {
			if toolscache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
				ix.MarkSynced()
			}
		}(ix, reg)
	}
	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	inf, err := w.cache.GetInformer(ctx, &corev1.ConfigMap{})
	if err != nil {
		return fmt.Errorf("starting the ConfigMap informer: %w", err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	if err != nil {
		return fmt.Errorf("watching policy ConfigMaps: %w", err)
	}
	if !toolscache.WaitForCacheSync(ctx.Done(), reg.HasSynced) {
		return nil
	}
	poke()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
		}
		var list corev1.ConfigMapList
		opts := []client.ListOption{client.MatchingLabels{policy.PolicyLabel: "true"}}
		if !w.opts.TeamPolicies {
			opts = append(opts, client.InNamespace(w.opts.Namespace))
		}
		if err := w.reader.List(ctx, &list, opts...); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "listing policy ConfigMaps from the cache")
			time.Sleep(time.Second)
			poke()
			continue
		}
		w.Store.Rebuild(ctx, list.Items)
	}
}
