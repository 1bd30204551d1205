package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// benchReview is an AdmissionReview for a 10-container pod with the usual bulk of a
// real pod (env, resources, probes, volume mounts), in a sandboxed namespace.
func benchReview(tb testing.TB) []byte {
	tb.Helper()
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
			"volumeMounts":   []map[string]string{{"name": "config", "mountPath": "/etc/app"}, {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}},
		}
	}
	review := map[string]any{
		"apiVersion": "admission.k8s.io/v1",
		"kind":       "AdmissionReview",
		"request": map[string]any{
			"uid":       "705ab4f5-6393-11e8-b7cc-42010a800002",
			"kind":      map[string]string{"group": "", "version": "v1", "kind": "Pod"},
			"resource":  map[string]string{"group": "", "version": "v1", "resource": "pods"},
			"namespace": "shop", "operation": "CREATE",
			"userInfo": map[string]any{"username": "system:serviceaccount:kube-system:replicaset-controller", "groups": []string{"system:serviceaccounts", "system:authenticated"}},
			"object": map[string]any{
				"apiVersion": "v1", "kind": "Pod",
				"metadata": map[string]any{
					"generateName": "storefront-7d9f8b6c5-", "namespace": "shop",
					"labels":          map[string]string{"app": "storefront", "pod-template-hash": "7d9f8b6c5", "tier": "web"},
					"annotations":     map[string]string{"prometheus.io/scrape": "true"},
					"ownerReferences": []map[string]any{{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "storefront-7d9f8b6c5", "uid": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "controller": true}},
				},
				"spec": map[string]any{
					"containers":         containers,
					"serviceAccountName": "storefront",
					"volumes":            []map[string]any{{"name": "config", "configMap": map[string]string{"name": "storefront"}}},
				},
			},
			"dryRun": false,
		},
	}
	b, err := json.Marshal(review)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkHandler measures one admission in process: decode the AdmissionReview,
// decide, encode the response, through controller-runtime's admission HTTP handler.
func BenchmarkHandler(b *testing.B) {
	mut, _ := testMutator(b)
	h := mut
	body := benchReview(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Body.String())
		}
	}
}
