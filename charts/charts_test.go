package charts

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v4/pkg/action"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const kubeVersion = "v1.37.2"

// values parses a YAML values document.
func values(t *testing.T, doc string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("values %q: %v", doc, err)
	}
	return v
}

func render(t *testing.T, namespace, doc string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := Render(namespace, kubeVersion, values(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// kustomize builds a directory of manifests/.
func kustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), filepath.Join("..", "manifests", dir))
	if err != nil {
		t.Fatalf("kustomize build manifests/%s: %v", dir, err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// helmLabels are the labels the chart adds that the kustomize tree has no use for.
var helmLabels = []string{"app.kubernetes.io/managed-by", "app.kubernetes.io/version", "helm.sh/chart"}

// normalize drops the chart's own labels and empty maps and lists, so that objects
// compare by what the apiserver stores.
func normalize(o *unstructured.Unstructured) map[string]any {
	m := o.DeepCopy().Object
	if labels, ok, _ := unstructured.NestedStringMap(m, "metadata", "labels"); ok {
		for _, l := range helmLabels {
			delete(labels, l)
		}
		_ = unstructured.SetNestedStringMap(m, labels, "metadata", "labels")
	}
	return prune(m).(map[string]any)
}

func prune(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			e = prune(e)
			if isEmpty(e) {
				delete(v, k)
				continue
			}
			v[k] = e
		}
	case []any:
		for i, e := range v {
			v[i] = prune(e)
		}
	}
	return v
}

func isEmpty(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		return len(v) == 0
	case []any:
		return len(v) == 0
	case nil:
		return true
	}
	return false
}

func key(o *unstructured.Unstructured) string {
	return o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

func byKey(objs []*unstructured.Unstructured, kinds []string) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, o := range objs {
		if kinds == nil || slices.Contains(kinds, o.GetKind()) {
			out[key(o)] = normalize(o)
		}
	}
	return out
}

// TestChartMatchesKustomize: for the same settings, the chart and the kustomize tree
// install the same objects, field for field (comments aside). This is what keeps the
// two installations one: a change to either that is not made to the other fails here.
func TestChartMatchesKustomize(t *testing.T) {
	const images = "webhook: {image: {tag: dev}}\nnode: {image: {tag: dev}}\n"
	for _, tc := range []struct {
		dir, namespace, values string
		kinds                  []string // nil: every object
	}{
		{dir: ".", namespace: "isolator-system", values: images + "createNamespace: true"},
		{dir: "overlays/cert-manager", namespace: "isolator-system", values: images + "createNamespace: true"},
		{dir: "overlays/self-signed", namespace: "isolator-system", values: images + "createNamespace: true\ncertificates: {mode: self-signed}"},
		{dir: "overlays/platform-isolator", namespace: "platform-isolator", values: images + "createNamespace: true"},
		{dir: "monitoring", namespace: "isolator-system",
			values: "monitoring: {serviceMonitor: {enabled: true}, podMonitor: {enabled: true}, prometheusRule: {enabled: true}}",
			kinds:  []string{"ServiceMonitor", "PodMonitor", "PrometheusRule"}},
		{dir: "network-policy", namespace: "isolator-system", values: "networkPolicy: {enabled: true}", kinds: []string{"NetworkPolicy"}},
		{dir: "runtimeclasses", namespace: "isolator-system", values: "", kinds: []string{"RuntimeClass"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			fromKustomize := byKey(kustomize(t, tc.dir), tc.kinds)
			fromChart := byKey(render(t, tc.namespace, tc.values), tc.kinds)
			for _, k := range slices.Sorted(maps.Keys(fromKustomize)) {
				c, ok := fromChart[k]
				if !ok {
					t.Errorf("%s: in manifests/%s, not in the chart", k, tc.dir)
					continue
				}
				if diff := cmp.Diff(fromKustomize[k], c); diff != "" {
					t.Errorf("%s differs (-kustomize +chart):\n%s", k, diff)
				}
			}
			for _, k := range slices.Sorted(maps.Keys(fromChart)) {
				if _, ok := fromKustomize[k]; !ok {
					t.Errorf("%s: in the chart, not in manifests/%s", k, tc.dir)
				}
			}
			if len(fromKustomize) == 0 {
				t.Error("nothing compared")
			}
		})
	}
}

// TestLint runs helm lint (strict: warnings fail) with the default values and with
// every optional part turned on.
func TestLint(t *testing.T) {
	for name, doc := range map[string]string{
		"defaults": "",
		"everything": `createNamespace: true
certificates: {mode: self-signed}
monitoring:
  serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
  podMonitor: {enabled: true}
  prometheusRule: {enabled: true}
  grafanaDashboard: {enabled: true}
networkPolicy: {enabled: true}
policy: |
  apiVersion: isolator.dev/v1alpha2
  kind: RuntimePolicy
  spec:
    runtimeClasses: [{name: kata-rc, isolation: VM}, {name: runc-rc, isolation: Container}]
    rules:
    - name: tenants
      runtimeClass: kata-rc
      match: {namespaces: ["tenant-*"]}
`,
	} {
		t.Run(name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = "isolator-system"
			res := lint.Run([]string{Dir()}, values(t, doc))
			for _, m := range res.Messages {
				t.Logf("%s", m)
			}
			if len(res.Errors) > 0 {
				t.Errorf("helm lint: %v", res.Errors)
			}
			if res.TotalChartsLinted != 1 {
				t.Errorf("linted %d charts, want 1", res.TotalChartsLinted)
			}
		})
	}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

func kinds(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	slices.Sort(out)
	return out
}

func webhookArgs(t *testing.T, objs []*unstructured.Unstructured) []string {
	t.Helper()
	d := find(objs, "Deployment", "isolator-webhook")
	if d == nil {
		t.Fatal("no Deployment isolator-webhook")
	}
	cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
	args, _, _ := unstructured.NestedStringSlice(cs[0].(map[string]any), "args")
	return args
}

// TestValues checks the settings the kustomize comparison does not cover.
func TestValues(t *testing.T) {
	t.Run("the release namespace is the default", func(t *testing.T) {
		for _, o := range render(t, "platform-isolator", "") {
			if ns := o.GetNamespace(); ns != "" && ns != "platform-isolator" {
				t.Errorf("%s is in namespace %s", key(o), ns)
			}
		}
		if ns := find(render(t, "platform-isolator", ""), "Namespace", "platform-isolator"); ns != nil {
			t.Error("the chart creates the namespace without createNamespace")
		}
	})
	t.Run("namespace overrides the release namespace", func(t *testing.T) {
		objs := render(t, "default", "namespace: platform-isolator")
		if d := find(objs, "Deployment", "isolator-webhook"); d == nil || d.GetNamespace() != "platform-isolator" {
			t.Errorf("Deployment = %v", d)
		}
	})
	t.Run("images default to the chart's appVersion", func(t *testing.T) {
		objs := render(t, "isolator-system", "webhook: {image: {repository: registry.example.com/isolator-webhook}}")
		d := find(objs, "Deployment", "isolator-webhook")
		cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		if img := cs[0].(map[string]any)["image"]; img != "registry.example.com/isolator-webhook:"+appVersion(t) {
			t.Errorf("image = %v, want registry.example.com/isolator-webhook:%s", img, appVersion(t))
		}
	})
	t.Run("replicas and resources", func(t *testing.T) {
		objs := render(t, "isolator-system", "webhook: {replicas: 5, resources: {limits: {memory: 512Mi}}}")
		d := find(objs, "Deployment", "isolator-webhook")
		if r, _, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas"); fmt.Sprint(r) != "5" {
			t.Errorf("replicas = %v", r)
		}
		cs, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
		if m, _, _ := unstructured.NestedString(cs[0].(map[string]any), "resources", "limits", "memory"); m != "512Mi" {
			t.Errorf("memory limit = %q", m)
		}
	})
	t.Run("a ResourceQuota only for system classes outside kube-system", func(t *testing.T) {
		q := find(render(t, "isolator-system", ""), "ResourceQuota", "isolator-critical-pods")
		if q == nil {
			t.Fatal("no ResourceQuota by default")
		}
		vals, _, _ := unstructured.NestedSlice(q.Object, "spec", "scopeSelector", "matchExpressions")
		if got := vals[0].(map[string]any)["values"]; !cmp.Equal(got, []any{"system-cluster-critical", "system-node-critical"}) {
			t.Errorf("quota covers %v", got)
		}
		if q := find(render(t, "kube-system", ""), "ResourceQuota", "isolator-critical-pods"); q != nil {
			t.Error("a ResourceQuota in kube-system")
		}
		if q := find(render(t, "isolator-system", "webhook: {priorityClassName: ''}\nnode: {enabled: false}"), "ResourceQuota", "isolator-critical-pods"); q != nil {
			t.Error("a ResourceQuota without system priority classes")
		}
		q = find(render(t, "isolator-system", "node: {enabled: false}"), "ResourceQuota", "isolator-critical-pods")
		vals, _, _ = unstructured.NestedSlice(q.Object, "spec", "scopeSelector", "matchExpressions")
		if got := vals[0].(map[string]any)["values"]; !cmp.Equal(got, []any{"system-cluster-critical"}) {
			t.Errorf("without the DaemonSet the quota covers %v", got)
		}
	})
	t.Run("backstop off", func(t *testing.T) {
		objs := render(t, "isolator-system", "backstop: {enabled: false}")
		args := webhookArgs(t, objs)
		if !slices.Contains(args, "--backstop=false") || slices.Contains(args, "--owner=isolator") {
			t.Errorf("args = %v", args)
		}
		role := find(objs, "ClusterRole", "isolator-webhook")
		rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
		for _, r := range rules {
			if res, _, _ := unstructured.NestedStringSlice(r.(map[string]any), "resources"); slices.Contains(res, "validatingadmissionpolicies") {
				t.Errorf("the webhook may still write admission policies: %v", r)
			}
		}
	})
	t.Run("node off", func(t *testing.T) {
		objs := render(t, "isolator-system", "node: {enabled: false}\nmonitoring: {podMonitor: {enabled: true}}")
		for _, k := range kinds(objs) {
			if strings.HasSuffix(k, "/isolator-node") || strings.HasSuffix(k, "/isolator-node-labels") {
				t.Errorf("%s rendered with node.enabled=false", k)
			}
		}
	})
	t.Run("node selector", func(t *testing.T) {
		// Helm merges maps: a key is added to the default opt-in label, and null
		// removes the default.
		for doc, want := range map[string]map[string]string{
			"node: {nodeSelector: {pool: sandbox}}":                          {"isolator.dev/kata": "enabled", "pool": "sandbox"},
			"node: {nodeSelector: {pool: sandbox, isolator.dev/kata: null}}": {"pool": "sandbox"},
		} {
			ds := find(render(t, "isolator-system", doc), "DaemonSet", "isolator-node")
			sel, _, _ := unstructured.NestedStringMap(ds.Object, "spec", "template", "spec", "nodeSelector")
			if !cmp.Equal(sel, want) {
				t.Errorf("%s: nodeSelector = %v, want %v", doc, sel, want)
			}
		}
	})
	t.Run("runtime classes and overhead", func(t *testing.T) {
		objs := render(t, "isolator-system", "runtimeClasses: {kataOverhead: {cpu: 500m, memory: 320Mi}}")
		rc := find(objs, "RuntimeClass", "kata-rc")
		if m, _, _ := unstructured.NestedString(rc.Object, "overhead", "podFixed", "memory"); m != "320Mi" {
			t.Errorf("kata-rc overhead memory = %q", m)
		}
		if rc := find(render(t, "isolator-system", "runtimeClasses: {create: false}"), "RuntimeClass", "kata-rc"); rc != nil {
			t.Error("kata-rc rendered with runtimeClasses.create=false")
		}
	})
	t.Run("monitoring labels", func(t *testing.T) {
		objs := render(t, "isolator-system", `monitoring:
  serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
  podMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
  prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack}}
  grafanaDashboard: {enabled: true, namespace: monitoring}`)
		for _, k := range [][2]string{{"ServiceMonitor", "isolator-webhook"}, {"PodMonitor", "isolator-node"}, {"PrometheusRule", "isolator"}} {
			o := find(objs, k[0], k[1])
			if o == nil || o.GetLabels()["release"] != "kube-prometheus-stack" {
				t.Errorf("%s %s: labels %v", k[0], k[1], o)
			}
		}
		cm := find(objs, "ConfigMap", "isolator-dashboard")
		if cm == nil || cm.GetNamespace() != "monitoring" || cm.GetLabels()["grafana_dashboard"] != "1" {
			t.Fatalf("dashboard ConfigMap = %v", cm)
		}
		if d, _, _ := unstructured.NestedString(cm.Object, "data", "isolator.json"); !strings.Contains(d, `"uid": "isolator"`) {
			t.Error("the dashboard ConfigMap does not hold the dashboard")
		}
	})
	t.Run("values are checked against values.schema.json", func(t *testing.T) {
		for doc, want := range map[string]string{
			"certificates: {mode: vault}":      "'/certificates/mode': value must be one of 'cert-manager', 'self-signed'",
			"webhook: {replica: 3}":            "'/webhook': additional properties 'replica' not allowed",
			"webhook: {replicas: 0}":           "'/webhook/replicas': minimum",
			"monitoring: {serviceMonitor: {}}": "",
		} {
			_, err := Render("isolator-system", kubeVersion, values(t, doc))
			switch {
			case want == "" && err != nil:
				t.Errorf("%s: %v", doc, err)
			case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
				t.Errorf("%s: %v, want an error containing %q", doc, err, want)
			}
		}
	})
}

func appVersion(t *testing.T) string {
	t.Helper()
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := readYAML(filepath.Join(Dir(), "Chart.yaml"), &c); err != nil {
		t.Fatal(err)
	}
	return c.AppVersion
}
