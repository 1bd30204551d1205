// Package samplepod is the pod that isolator's benchmarks, fuzz seeds and load tool
// admit: a Deployment's pod with ten containers and the usual bulk of a real one (env,
// resources, probes, volume mounts, owner references), so that a measurement includes
// the fields the webhook skips as well as the ones it reads.
package samplepod

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
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

// MalformedReviews are requests the webhook must refuse cleanly (or, for the last
// few, decode like encoding/json does): not JSON, not a review, the wrong kind or
// version, no object, a 7 MiB pod, 100,000 levels of nesting, invalid UTF-8, a
// truncated body. The webhook's malformed-request test and fuzz seeds, and the
// decoder's differential test, share them.
func MalformedReviews() (map[string][]byte, error) {
	valid, err := Review("shop")
	if err != nil {
		return nil, err
	}
	var bad error
	bigPod := func(size int) []byte {
		var r map[string]any
		if err := json.Unmarshal(valid, &r); err != nil {
			bad = err
			return nil
		}
		obj := r["request"].(map[string]any)["object"].(map[string]any)
		obj["metadata"].(map[string]any)["annotations"] = map[string]string{"blob": strings.Repeat("x", size)}
		b, _ := json.Marshal(r)
		return b
	}
	nested := func(depth int) []byte {
		s := strings.Replace(string(valid), `"spec":{`, `"spec":{"deep":`+strings.Repeat("[", depth)+strings.Repeat("]", depth)+`,`, 1)
		return []byte(s)
	}
	cases := map[string][]byte{
		"empty body":            {},
		"not JSON":              []byte("this is not JSON"),
		"JSON but not a review": []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`),
		"a JSON array":          []byte(`[1,2,3]`),
		"null":                  []byte(`null`),
		"wrong kind":            bytes.Replace(valid, []byte(`"kind":"AdmissionReview"`), []byte(`"kind":"Pod"`), 1),
		"v1beta1 review":        bytes.Replace(valid, []byte(`"admission.k8s.io/v1"`), []byte(`"admission.k8s.io/v1beta1"`), 1),
		"missing object":        bytes.Replace(valid, []byte(`"object":`), []byte(`"oldObject":`), 1),
		"object not a pod":      bytes.Replace(valid, []byte(`"containers":[`), []byte(`"containers":"x","other":[`), 1),
		"7 MiB pod":             bigPod(7 << 20),
		"just under the cap":    bigPod(6 << 20),
		"deeply nested JSON":    nested(100000),
		"unknown fields":        bytes.Replace(valid, []byte(`"spec":{`), []byte(`"spec":{"futureField":{"a":[1,{"b":null}]},`), 1),
		"invalid UTF-8":         bytes.Replace(valid, []byte(`storefront-7d9f8b6c5-`), []byte("store\xff\xfe-"), 1),
		"truncated":             valid[:len(valid)/2],
	}
	return cases, bad
}
