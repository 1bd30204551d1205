package webhook

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kinds read through metadata-only informers.
var (
	namespaceGVK    = schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}
	runtimeClassGVK = schema.GroupVersionKind{Group: "node.k8s.io", Version: "v1", Kind: "RuntimeClass"}
)

// MetaIndex holds the labels of every object of one cluster-scoped kind, fed by a
// metadata-only informer. Reads are a sync.Map load: no lock on the admission path.
// Label maps are never mutated after they are stored.
type MetaIndex struct {
	gvk    schema.GroupVersionKind
	byName sync.Map // name -> map[string]string
	synced atomic.Bool
	// live reads an object the informer has not delivered yet (created a moment ago).
	live client.Reader
}

// NewMetaIndex returns an index of gvk objects that falls back to live reads on a miss.
// live may be nil, for tests and tools that preload the index.
func NewMetaIndex(gvk schema.GroupVersionKind, live client.Reader) *MetaIndex {
	return &MetaIndex{gvk: gvk, live: live}
}

// Set stores an object's labels (used by the informer handler and by tools).
func (ix *MetaIndex) Set(name string, labels map[string]string) {
	if labels == nil {
		labels = map[string]string{}
	}
	ix.byName.Store(name, labels)
}

// Delete forgets an object.
func (ix *MetaIndex) Delete(name string) { ix.byName.Delete(name) }

// MarkSynced records that the informer has delivered its initial list.
func (ix *MetaIndex) MarkSynced() { ix.synced.Store(true) }

// Synced reports whether the initial list has been delivered.
func (ix *MetaIndex) Synced() bool { return ix.synced.Load() }

// Cached returns the labels of a known object without any I/O.
func (ix *MetaIndex) Cached(name string) (map[string]string, bool) {
	v, ok := ix.byName.Load(name)
	if !ok {
		return nil, false
	}
	return v.(map[string]string), true
}

// Labels returns an object's labels: from the informer, or from the apiserver when the
// informer has not seen the object yet. found is false when the object does not exist.
func (ix *MetaIndex) Labels(ctx context.Context, name string) (labels map[string]string, found bool, err error) {
	if l, ok := ix.Cached(name); ok {
		return l, true, nil
	}
	if ix.live == nil {
		return nil, false, nil
	}
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(ix.gvk)
	if err := ix.live.Get(ctx, client.ObjectKey{Name: name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("reading %s %q from the apiserver: %w", ix.gvk.Kind, name, err)
	}
	l := obj.GetLabels()
	ix.Set(name, l)
	return l, true, nil
}

// handler keeps the index in step with an informer.
func (ix *MetaIndex) handler() toolscache.ResourceEventHandlerFuncs {
	// The informer's objects are never modified (the cache hands out copies to
	// readers), so the index shares their label maps rather than copying each one.
	store := func(obj any) {
		if m, ok := obj.(metav1.Object); ok {
			ix.Set(m.GetName(), m.GetLabels())
		}
	}
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc:    store,
		UpdateFunc: func(_, obj any) { store(obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if m, ok := obj.(metav1.Object); ok {
				ix.Delete(m.GetName())
			}
		},
	}
}
