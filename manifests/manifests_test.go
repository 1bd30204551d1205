// Package manifests holds no Go code: its tests check that every kustomization under
// manifests/ builds and that what it builds matches the names isolator's parts share.
package manifests

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/isolator-dev/isolator/backstop"
	"github.com/isolator-dev/isolator/policy"
)

// crdKinds are the custom resources the manifests use; the e2e tests check them
// against the real CRDs (cert-manager, prometheus-operator) with a server dry run.
var crdKinds = map[string]bool{
	"cert-manager.io/v1 Issuer":               true,
	"cert-manager.io/v1 Certificate":          true,
	"monitoring.coreos.com/v1 ServiceMonitor": true,
	"monitoring.coreos.com/v1 PodMonitor":     true,
	"monitoring.coreos.com/v1 PrometheusRule": true,
}

// Kustomizations lists every directory under manifests/ with a kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(dirs)
	return dirs
}

// build runs kustomize on dir and decodes every object strictly: an unknown or
// misspelt field in a built-in kind fails.
func build(t *testing.T, dir string) []runtime.Object {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, r := range rm.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		var tm struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal(data, &tm); err != nil {
			t.Fatalf("%s: %s: %v", dir, r.CurId(), err)
		}
		if crdKinds[tm.APIVersion+" "+tm.Kind] {
			continue
		}
		obj, _, err := decoder.Decode(data, nil, nil)
		if err != nil {
			t.Errorf("%s: %s does not decode strictly: %v", dir, r.CurId(), err)
			continue
		}
		objs = append(objs, obj)
	}
	return objs
}

func TestEveryKustomizationBuilds(t *testing.T) {
	dirs := kustomizations(t)
	want := []string{".", "base", "monitoring", "network-policy", "node", "overlays/cert-manager", "overlays/platform-isolator", "overlays/self-signed", "runtimeclasses"}
	if !slices.Equal(dirs, want) {
		t.Errorf("kustomizations = %v, want %v (update this test when adding one)", dirs, want)
	}
	for _, dir := range dirs {
		t.Run(dir, func(t *testing.T) {
			wantNS := "isolator-system"
			if dir == "overlays/platform-isolator" {
				wantNS = "platform-isolator"
			}
			for _, obj := range build(t, dir) {
				m, ok := obj.(interface {
					GetNamespace() string
					GetName() string
				})
				if !ok {
					continue
				}
				if ns := m.GetNamespace(); ns != "" && ns != wantNS {
					t.Errorf("%s %s is in namespace %s, want %s", obj.GetObjectKind().GroupVersionKind().Kind, m.GetName(), ns, wantNS)
				}
			}
		})
	}
}

func find[T runtime.Object](objs []runtime.Object, name string, get func(T) string) T {
	var zero T
	for _, o := range objs {
		if t, ok := o.(T); ok && get(t) == name {
			return t
		}
	}
	return zero
}

// TestOverlaysKeepTheSharedNames checks what the webhook, the certificates and the
// node bootstrapper rely on, in both overlays.
func TestOverlaysKeepTheSharedNames(t *testing.T) {
	for _, tc := range []struct {
		dir, certMode string
		// mountedCerts: cert-manager writes the Secret and the kubelet updates the
		// files; a self-managed webhook reads the Secret through the API instead.
		mountedCerts bool
	}{
		{"overlays/cert-manager", "cert-manager", true},
		{"overlays/self-signed", "self", false},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := build(t, tc.dir)
			dep := find(objs, "isolator-webhook", func(d *appsv1.Deployment) string { return d.Name })
			if dep == nil {
				t.Fatal("no Deployment isolator-webhook")
			}
			spec := dep.Spec.Template.Spec
			c := spec.Containers[0]
			for _, a := range []string{"webhook", "--port=9443", "--metrics-bind-address=:8080", "--health-probe-bind-address=:8081",
				"--cert-dir=/tmp/k8s-webhook-server/serving-certs", "--cert-mode=" + tc.certMode} {
				if !slices.Contains(c.Args, a) {
					t.Errorf("webhook args %v lack %s", c.Args, a)
				}
			}
			if *dep.Spec.Replicas != 3 || spec.PriorityClassName != "system-cluster-critical" || spec.ServiceAccountName != "isolator-webhook" {
				t.Errorf("replicas %d, priorityClassName %q, serviceAccountName %q; want 3, system-cluster-critical, isolator-webhook",
					*dep.Spec.Replicas, spec.PriorityClassName, spec.ServiceAccountName)
			}
			if c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Port.StrVal != "health" {
				t.Errorf("probes: readiness %+v, liveness %+v", c.ReadinessProbe.HTTPGet, c.LivenessProbe.HTTPGet)
			}
			if c.Lifecycle.PreStop.Sleep == nil || *spec.TerminationGracePeriodSeconds <= c.Lifecycle.PreStop.Sleep.Seconds {
				t.Errorf("preStop %+v must sleep less than terminationGracePeriodSeconds %d", c.Lifecycle.PreStop, *spec.TerminationGracePeriodSeconds)
			}
			var certs *corev1.Volume
			for i := range spec.Volumes {
				if spec.Volumes[i].Secret != nil && spec.Volumes[i].Secret.SecretName == "isolator-webhook-tls" {
					certs = &spec.Volumes[i]
				}
			}
			switch {
			case !tc.mountedCerts && certs != nil:
				t.Error("the Secret isolator-webhook-tls is mounted, but a self-managed webhook reads it through the API")
			case !tc.mountedCerts:
			case certs == nil:
				t.Fatal("the Secret isolator-webhook-tls is not mounted")
			case certs.Secret.Optional != nil && *certs.Secret.Optional:
				t.Error("the certificate volume is optional: the webhook must not start without its certificate")
			}
			for _, m := range c.VolumeMounts {
				if certs != nil && m.Name == certs.Name && (m.MountPath != "/tmp/k8s-webhook-server/serving-certs" || m.SubPath != "") {
					t.Errorf("certificates mounted at %s (subPath %q), want /tmp/k8s-webhook-server/serving-certs without subPath", m.MountPath, m.SubPath)
				}
			}

			svc := find(objs, "isolator-webhook", func(s *corev1.Service) string { return s.Name })
			if svc == nil || svc.Spec.Ports[0].Name != "https" || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.StrVal != "https" {
				t.Errorf("Service isolator-webhook: %+v, want port 443 named https to the https container port", svc)
			}

			mwc := find(objs, "isolator", func(m *admissionregistrationv1.MutatingWebhookConfiguration) string { return m.Name })
			if mwc == nil || len(mwc.Webhooks) != 1 {
				t.Fatal("no MutatingWebhookConfiguration isolator with one webhook")
			}
			w := mwc.Webhooks[0]
			if w.Name != "pods.isolator.dev" || *w.ClientConfig.Service.Path != "/mutate-pods" || *w.FailurePolicy != admissionregistrationv1.Ignore ||
				*w.ReinvocationPolicy != admissionregistrationv1.IfNeededReinvocationPolicy || *w.SideEffects != admissionregistrationv1.SideEffectClassNone ||
				*w.TimeoutSeconds > 3 || len(w.ClientConfig.CABundle) != 0 {
				t.Errorf("mutating webhook %+v", w)
			}
			if ops := w.Rules[0].Operations; !slices.Equal(ops, []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update}) {
				t.Errorf("mutating webhook operations %v, want [CREATE UPDATE]", ops)
			}
			excluded := w.NamespaceSelector.MatchExpressions[0].Values
			for _, ns := range []string{"kube-system", "kube-public", "kube-node-lease", "isolator-system"} {
				if !slices.Contains(excluded, ns) {
					t.Errorf("the mutating webhook does not exclude namespace %s", ns)
				}
			}
			if len(w.MatchConditions) != 2 || !strings.Contains(w.MatchConditions[0].Expression, "kubernetes.io/config.mirror") {
				t.Errorf("matchConditions %v do not skip mirror pods", w.MatchConditions)
			}
			// Updates reach the webhook exactly when they would reach the backstop.
			if len(w.MatchConditions) != 2 || w.MatchConditions[1].Name != backstop.ImageChangeCondition || w.MatchConditions[1].Expression != backstop.ImageChangeExpression {
				t.Errorf("matchConditions %v: want %s: %s", w.MatchConditions, backstop.ImageChangeCondition, backstop.ImageChangeExpression)
			}

			vwc := find(objs, "isolator", func(m *admissionregistrationv1.ValidatingWebhookConfiguration) string { return m.Name })
			if vwc == nil || vwc.Webhooks[0].Name != "policies.isolator.dev" || *vwc.Webhooks[0].ClientConfig.Service.Path != "/validate-policy" ||
				vwc.Webhooks[0].ObjectSelector.MatchLabels["isolator.dev/policy"] != "true" {
				t.Errorf("validating webhook %+v", vwc)
			}
			for _, obj := range []interface{ GetAnnotations() map[string]string }{mwc, vwc} {
				got := obj.GetAnnotations()["cert-manager.io/inject-ca-from"]
				want := ""
				if tc.certMode == "cert-manager" {
					want = "isolator-system/isolator-webhook"
				}
				if got != want {
					t.Errorf("inject-ca-from = %q, want %q", got, want)
				}
			}

			kata := find(objs, "kata-rc", func(r *nodev1.RuntimeClass) string { return r.Name })
			if kata == nil || kata.Handler != "kata" || kata.Scheduling.NodeSelector["isolator.dev/kata-runtime"] != "true" || kata.Overhead == nil {
				t.Errorf("RuntimeClass kata-rc: %+v", kata)
			}
			if runc := find(objs, "runc-rc", func(r *nodev1.RuntimeClass) string { return r.Name }); runc == nil || runc.Handler != "runc" {
				t.Errorf("RuntimeClass runc-rc: %+v", runc)
			}

			ds := find(objs, "isolator-node", func(d *appsv1.DaemonSet) string { return d.Name })
			if ds == nil || ds.Spec.Template.Spec.NodeSelector["isolator.dev/kata"] != "enabled" || ds.Spec.Template.Spec.ServiceAccountName != "isolator-node" {
				t.Fatalf("DaemonSet isolator-node: %+v", ds)
			}
			for _, a := range []string{"node", "run", "--host-root=/host", "--artifacts=/opt/isolator/kata"} {
				if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, a) {
					t.Errorf("node args %v lack %s", ds.Spec.Template.Spec.Containers[0].Args, a)
				}
			}
			if ds.Spec.Template.Spec.HostNetwork || ds.Spec.Template.Spec.HostPID || ds.Spec.Template.Spec.HostIPC {
				t.Error("isolator-node must not use host namespaces")
			}
			// The host root is read-only; isolator writes only where it must.
			writable := []string{"/host/opt/kata", "/host/etc/containerd", "/host/run/containerd", "/host/var/lib/isolator", "/host/run/systemd", "/host/run/dbus", "/tmp"}
			for _, m := range ds.Spec.Template.Spec.Containers[0].VolumeMounts {
				switch {
				case m.MountPath == "/host":
					if !m.ReadOnly {
						t.Error("the host root must be mounted read-only")
					}
				case !m.ReadOnly && !slices.Contains(writable, m.MountPath):
					t.Errorf("isolator-node may write %s, which is not in %v", m.MountPath, writable)
				}
			}
		})
	}
}

// TestNamespaceIsASetting: the overlay that installs isolator into another namespace
// leaves no reference to the default one behind, anywhere in any object (certificate
// names, CA injection, webhook exclusions, the label guards' service accounts), and
// names the new one in each of those places.
func TestNamespaceIsASetting(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), "overlays/platform-isolator")
	if err != nil {
		t.Fatal(err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "isolator-system") {
			t.Errorf("line %d still names isolator-system: %s", i+1, strings.TrimSpace(line))
		}
	}
	for _, want := range []string{
		"- isolator-webhook.platform-isolator.svc\n",
		"- isolator-webhook.platform-isolator.svc.cluster.local\n",
		"cert-manager.io/inject-ca-from: platform-isolator/isolator-webhook\n",
		"      - platform-isolator\n", // the pod webhook's namespaceSelector
		`expression: '''platform-isolator'''` + "\n",
		`"system:serviceaccount:platform-isolator:isolator-node"`,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the build does not contain %q", want)
		}
	}
}

// TestExamplesAreSafe: every example policy file stands alone (it compiles by itself,
// with no warning, such as a label a pod author could set to leave a rule), points
// editors at the policy schema, and says what it does to the whole cluster; and
// applying the examples directory (kubectl apply -f manifests/examples/, which does not
// descend into cluster-wide/) leaves an ordinary pod in an ordinary namespace out of
// Kata.
func TestExamplesAreSafe(t *testing.T) {
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("examples/*/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var topLevel []policy.Source
	n := 0
	for _, f := range append(files, more...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), policy.PolicyLabel+`: "true"`) {
			continue // not a policy (pods.yaml)
		}
		n++
		if first, _, _ := strings.Cut(string(data), "\n"); first != "# yaml-language-server: $schema="+policy.SchemaURL {
			t.Errorf("%s: the first line is %q, want the yaml-language-server modeline naming %s", f, first, policy.SchemaURL)
		}
		if !strings.Contains(string(data), "\n# Cluster-wide effect: ") {
			t.Errorf("%s: no \"# Cluster-wide effect:\" line saying what it does to the whole cluster", f)
		}
		srcs, errs := policy.ReadSources(f, strings.NewReader(string(data)))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", f, errs[0])
		}
		snap, err := policy.Compile(srcs...)
		if err != nil {
			t.Errorf("%s does not compile on its own: %v", f, err)
			continue
		}
		if w := snap.Warnings(); len(w) > 0 {
			t.Errorf("%s: warnings %q", f, w)
		}
		if filepath.Dir(f) == "examples" {
			topLevel = append(topLevel, srcs...)
		}
	}
	if n < 7 {
		t.Errorf("found only %d example policies", n)
	}
	snap, err := policy.Compile(topLevel...)
	if err != nil {
		t.Fatalf("the examples directory together: %v", err)
	}
	img, err := policy.NormalizeImage("registry.example.com/shop/app:1.0")
	if err != nil {
		t.Fatal(err)
	}
	d := snap.Evaluate(&policy.Facts{Namespace: "shop", Images: []policy.Image{img}, ServiceAccountName: "default"})
	if c, ok := snap.Class(d.RuntimeClass); ok && c.Sandboxed {
		t.Errorf("with every file of manifests/examples/ applied, an ordinary pod in an ordinary namespace gets %s (%s): the directory moves the whole cluster to Kata", d.RuntimeClass, d.Reason)
	}
}
