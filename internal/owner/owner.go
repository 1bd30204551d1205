// Package owner finds the object that owns what the isolator webhook creates at run time
// (the backstop admission policy and binding, the self-managed certificate Secret and the
// replicas' report Leases): isolator's MutatingWebhookConfiguration. Owned by it, they
// are deleted by the garbage collector when isolator is removed (kubectl delete -k, helm
// uninstall, a GitOps prune), so nothing is left behind still refusing pods or holding a
// CA key.
package owner

import (
	"context"
	"errors"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ErrMissing is returned while the owner does not exist: isolator is being removed, so
// the caller must create nothing.
var ErrMissing = errors.New("the MutatingWebhookConfiguration that owns isolator's run-time objects does not exist")

// Reference returns the owner reference to the MutatingWebhookConfiguration name, read
// uncached through reader.
func Reference(ctx context.Context, reader client.Reader, name string) (metav1.OwnerReference, error) {
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := reader.Get(ctx, client.ObjectKey{Name: name}, &mwc); err != nil {
		if apierrors.IsNotFound(err) {
			return metav1.OwnerReference{}, fmt.Errorf("%w: %s (isolator is being uninstalled, or --owner names the wrong object); nothing written", ErrMissing, name)
		}
		return metav1.OwnerReference{}, fmt.Errorf("reading MutatingWebhookConfiguration %s, the owner of isolator's run-time objects: %w", name, err)
	}
	return metav1.OwnerReference{
		APIVersion: admissionregistrationv1.SchemeGroupVersion.String(),
		Kind:       "MutatingWebhookConfiguration",
		Name:       mwc.Name,
		UID:        mwc.UID,
	}, nil
}

// Set makes ref the only owner reference of obj that points at a
// MutatingWebhookConfiguration, keeping any other owners, and reports whether obj
// changed.
func Set(obj metav1.Object, ref metav1.OwnerReference) bool {
	refs := obj.GetOwnerReferences()
	out := make([]metav1.OwnerReference, 0, len(refs)+1)
	changed := true
	for _, r := range refs {
		if r.Kind == ref.Kind && r.APIVersion == ref.APIVersion {
			if r.Name == ref.Name && r.UID == ref.UID {
				changed = false
				out = append(out, r)
			}
			continue
		}
		out = append(out, r)
	}
	if changed {
		out = append(out, ref)
		obj.SetOwnerReferences(out)
	}
	return changed
}
