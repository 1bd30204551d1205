// Package samplepod is the pod that isolator's benchmarks, fuzz seeds and load tool
// admit: a Deployment's pod with ten containers and the usual bulk of a real one (env,
// resources, probes, volume mounts, owner references), so that a measurement includes
// the fields the webhook skips as well as the ones it reads.
package samplepod

import (
	"encoding/json"
	"fmt"
)

// Pod returns the pod as a Deployment's template makes it in namespace, before
// admission: no runtimeClassName. It names no service account and no owner (objects
// that would have to exist), so the load tool can create it through a real apiserver.
func Pod(namespace string) map[string]any {
	containers := make([]map[string]any, 10)
	for i := range containers {
		containers[i] = map[string]any{
			"name":  fmt.Sprintf("app-%d", i),
			"image": fmt.Sprintf("registry.example.com/shop/service-%d:1.%d.0", i, i),
			"env": []map[string]string{
				{"name": "LOG_LEVEL", "value": "info"}, {"name": "REGION", "value": "eu-west-1"},
				{"name": "FEATURE_FLAGS", "value": "a,b,c,d"},
			},
			"resources": map[string]any{
				"requests": map[string]string{"cpu": "100m", "memory": "128Mi"},
				"limits":   map[string]string{"cpu": "500m", "memory": "512Mi"},
			},
			"ports":          []map[string]any{{"containerPort": 8080 + i, "protocol": "TCP"}},
			"readinessProbe": map[string]any{"httpGet": map[string]any{"path": "/ready", "port": 8080 + i}, "periodSeconds": 5},
			"volumeMounts":   []map[string]string{{"name": "config", "mountPath": "/etc/app"}},
		}
	}
	return map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{
			"generateName": "storefront-7d9f8b6c5-", "namespace": namespace,
			"labels":      map[string]string{"app": "storefront", "pod-template-hash": "7d9f8b6c5", "tier": "web"},
			"annotations": map[string]string{"prometheus.io/scrape": "true"},
		},
		"spec": map[string]any{
			"containers": containers,
			"volumes":    []map[string]any{{"name": "config", "configMap": map[string]string{"name": "storefront"}}},
		},
	}
}

// Review returns an AdmissionReview of Pod(namespace) as the apiserver sends it to
// the webhook when the ReplicaSet controller creates it: with its owner reference.
func Review(namespace string) ([]byte, error) {
	pod := Pod(namespace)
	pod["metadata"].(map[string]any)["ownerReferences"] = []map[string]any{{"apiVersion": "apps/v1", "kind": "ReplicaSet",
		"name": "storefront-7d9f8b6c5", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "controller": true}}
	return json.Marshal(map[string]any{
		"apiVersion": "admission.k8s.io/v1",
		"kind":       "AdmissionReview",
		"request": map[string]any{
			"uid":             "705ab4f5-6393-11e8-b7cc-42010a800002",
			"kind":            map[string]string{"group": "", "version": "v1", "kind": "Pod"},
			"resource":        map[string]string{"group": "", "version": "v1", "resource": "pods"},
			"requestKind":     map[string]string{"group": "", "version": "v1", "kind": "Pod"},
			"requestResource": map[string]string{"group": "", "version": "v1", "resource": "pods"},
			"namespace":       namespace, "operation": "CREATE",
			"userInfo": map[string]any{"username": "system:serviceaccount:kube-system:replicaset-controller",
				"uid": "c1a4", "groups": []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}},
			"object":  pod,
			"dryRun":  false,
			"options": map[string]string{"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
		},
	})
}
