package certs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// jsonPatchOp is one RFC 6902 operation.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// bundlePatch is a JSON patch that sets caBundle on the webhooks whose bundle differs,
// touching nothing else. Each replacement is guarded by a test of the webhook's name, so
// that a concurrent edit that reorders the webhooks fails the patch instead of putting the
// bundle where it doesn't belong. Nil when every webhook already holds bundle.
func bundlePatch(names []string, bundles [][]byte, bundle []byte) []jsonPatchOp {
	var ops []jsonPatchOp
	for i := range names {
		if bytes.Equal(bundles[i], bundle) {
			continue
		}
		ops = append(ops,
			jsonPatchOp{Op: "test", Path: fmt.Sprintf("/webhooks/%d/name", i), Value: names[i]},
			// "add" sets a member whether or not it exists.
			jsonPatchOp{Op: "add", Path: fmt.Sprintf("/webhooks/%d/clientConfig/caBundle", i), Value: bundle},
		)
	}
	return ops
}

// InjectBundle makes every webhook of isolator's Mutating and Validating webhook
// configurations (both named WebhookConfigurationName) trust bundle, patching only their
// caBundle. It reads the configurations from the apiserver, not from a cache, because
// the result decides when a new CA may start signing. A configuration that does not
// exist is skipped (it gets the bundle when it appears). It returns how many
// configurations it patched.
func InjectBundle(ctx context.Context, reader client.Reader, writer client.Writer, bundle []byte) (int, error) {
	patched := 0
	mut := &admissionregistrationv1.MutatingWebhookConfiguration{}
	val := &admissionregistrationv1.ValidatingWebhookConfiguration{}
	for _, obj := range []client.Object{mut, val} {
		err := reader.Get(ctx, types.NamespacedName{Name: WebhookConfigurationName}, obj)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return patched, fmt.Errorf("reading %s %s: %w", kindOf(obj), WebhookConfigurationName, err)
		}
		var names []string
		var bundles [][]byte
		switch o := obj.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			for _, w := range o.Webhooks {
				names, bundles = append(names, w.Name), append(bundles, w.ClientConfig.CABundle)
			}
		case *admissionregistrationv1.ValidatingWebhookConfiguration:
			for _, w := range o.Webhooks {
				names, bundles = append(names, w.Name), append(bundles, w.ClientConfig.CABundle)
			}
		}
		ops := bundlePatch(names, bundles, bundle)
		if len(ops) == 0 {
			continue
		}
		data, err := json.Marshal(ops)
		if err != nil {
			return patched, err
		}
		if err := writer.Patch(ctx, obj, client.RawPatch(types.JSONPatchType, data)); err != nil {
			return patched, fmt.Errorf("injecting the caBundle into %s %s: %w", kindOf(obj), WebhookConfigurationName, err)
		}
		patched++
	}
	return patched, nil
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *admissionregistrationv1.MutatingWebhookConfiguration:
		return "MutatingWebhookConfiguration"
	case *admissionregistrationv1.ValidatingWebhookConfiguration:
		return "ValidatingWebhookConfiguration"
	}
	return fmt.Sprintf("%T", obj)
}
