//go:build e2e

package manifests

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/isolator-dev/isolator/charts"
	"github.com/isolator-dev/isolator/e2e/harness"
)

// The values of the first install (the chart's defaults: cert-manager certificates),
// of the upgrade (self-signed certificates, everything optional on), and the policy
// the chart's policy value installs.
const (
	helmInstallValues = ``
	helmUpgradeValues = `
certificates: {mode: self-signed}
webhook: {replicas: 2}
monitoring:
  serviceMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
  podMonitor: {enabled: true, labels: {release: kube-prometheus-stack}}
  prometheusRule: {enabled: true, labels: {release: kube-prometheus-stack}}
  grafanaDashboard: {enabled: true}
networkPolicy: {enabled: true}
`
	helmPolicyValues = helmUpgradeValues + `policy: |
  apiVersion: isolator.dev/v1alpha2
  kind: RuntimePolicy
  spec:
    runtimeClasses:
    - {name: kata-rc, isolation: VM}
    - {name: runc-rc, isolation: Container}
    defaultRuntimeClass: runc-rc
    rules:
    - name: tenants
      runtimeClass: kata-rc
      match: {namespaces: ["helm-tenant-*"]}
`
)

// helmClient runs Helm's own install, upgrade and uninstall actions (what the helm
// command runs) against the test control plane.
type helmClient struct {
	cfg       *action.Configuration
	namespace string
}

func newHelm(t *testing.T, namespace string) *helmClient {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	kubeconfig := cp.Kubeconfig()
	flags.KubeConfig, flags.Namespace = &kubeconfig, &namespace
	cfg := action.NewConfiguration()
	if err := cfg.Init(flags, namespace, "secret"); err != nil {
		t.Fatal(err)
	}
	return &helmClient{cfg: cfg, namespace: namespace}
}

func parseValues(t *testing.T, doc string) map[string]any {
	t.Helper()
	v := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func (h *helmClient) install(t *testing.T, values string) {
	t.Helper()
	ch, err := loader.Load(charts.Dir())
	if err != nil {
		t.Fatal(err)
	}
	in := action.NewInstall(h.cfg)
	in.ReleaseName, in.Namespace, in.CreateNamespace = charts.ReleaseName, h.namespace, true
	in.ServerSideApply = true
	// No kubelet runs the pods here: wait for nothing but hooks (the chart has none).
	in.WaitStrategy, in.Timeout = kube.HookOnlyStrategy, 2*time.Minute
	if _, err := in.RunWithContext(context.Background(), ch, parseValues(t, values)); err != nil {
		t.Fatalf("helm install -n %s: %v", h.namespace, err)
	}
}

func (h *helmClient) upgrade(t *testing.T, values string) {
	t.Helper()
	ch, err := loader.Load(charts.Dir())
	if err != nil {
		t.Fatal(err)
	}
	up := action.NewUpgrade(h.cfg)
	up.Namespace, up.ServerSideApply = h.namespace, "true"
	up.WaitStrategy, up.Timeout = kube.HookOnlyStrategy, 2*time.Minute
	if _, err := up.RunWithContext(context.Background(), charts.ReleaseName, ch, parseValues(t, values)); err != nil {
		t.Fatalf("helm upgrade -n %s: %v", h.namespace, err)
	}
}

func (h *helmClient) uninstall(t *testing.T) {
	t.Helper()
	un := action.NewUninstall(h.cfg)
	un.WaitStrategy, un.Timeout = kube.HookOnlyStrategy, 2*time.Minute
	if _, err := un.Run(charts.ReleaseName); err != nil {
		t.Fatalf("helm uninstall -n %s: %v", h.namespace, err)
	}
}

// cluster reads any object by kind.
type cluster struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	disc   discovery.DiscoveryInterface
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cp.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	disc := memory.NewMemCacheClient(cp.Client().Discovery())
	return &cluster{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(disc), disc: disc}
}

func (c *cluster) resource(o *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.dyn.Resource(m.Resource).Namespace(o.GetNamespace()), nil
	}
	return c.dyn.Resource(m.Resource), nil
}

func (c *cluster) get(ctx context.Context, o *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	r, err := c.resource(o)
	if err != nil {
		return nil, err
	}
	return r.Get(ctx, o.GetName(), metav1.GetOptions{})
}

// checkInstalled: every object the chart renders for values is in the cluster.
func (c *cluster) checkInstalled(t *testing.T, namespace, values string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := charts.Render(namespace, "v1.37.2", parseValues(t, values))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, err := c.get(context.Background(), o); err != nil {
			t.Errorf("%s %s/%s is not installed: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	return objs
}

// leftovers lists every object in the cluster that is isolator's: labelled as part of
// isolator or managed by it (the backstop), a certificate report Lease, or owned by
// isolator's webhook configuration.
func (c *cluster) leftovers(t *testing.T, namespace string) []string {
	t.Helper()
	ctx := context.Background()
	lists, err := c.disc.ServerPreferredResources()
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.APIResources {
			if !slices.Contains(r.Verbs, "list") || strings.Contains(r.Name, "/") || r.Name == "events" {
				continue
			}
			res := c.dyn.Resource(gv.WithResource(r.Name))
			var ri dynamic.ResourceInterface = res
			if r.Namespaced {
				ri = res.Namespace(namespace)
			}
			items, err := ri.List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatalf("listing %s: %v", r.Name, err)
			}
			for _, o := range items.Items {
				l := o.GetLabels()
				owned := slices.ContainsFunc(o.GetOwnerReferences(), func(ref metav1.OwnerReference) bool {
					return ref.Kind == "MutatingWebhookConfiguration" && ref.Name == "isolator"
				})
				if l["app.kubernetes.io/part-of"] == "isolator" || l["app.kubernetes.io/managed-by"] == "isolator" ||
					l["isolator.dev/serving-cert-report"] == "true" || owned || o.GetName() == "isolator-webhook-tls" {
					found = append(found, r.Kind+" "+o.GetNamespace()+"/"+o.GetName())
				}
			}
		}
	}
	slices.Sort(found)
	return found
}

// startChartWebhook runs the webhook binary as the installed Deployment runs it: its
// args and environment, as its service account (a client certificate with the service
// account's user name and groups, so the chart's RBAC is what it gets). Only the ports
// and the kubeconfig differ: there is no kubelet, so the webhook configurations are
// pointed at it by URL instead of at the Service.
func startChartWebhook(t *testing.T, namespace string) *harness.Process {
	t.Helper()
	ctx := context.Background()
	d, err := cp.Client().AppsV1().Deployments(namespace).Get(ctx, "isolator-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sa := "system:serviceaccount:" + namespace + ":" + d.Spec.Template.Spec.ServiceAccountName
	kubeconfig, err := cp.UserKubeconfig(sa, "system:serviceaccounts", "system:serviceaccounts:"+namespace, "system:authenticated")
	if err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	ports, err := harness.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, a := range c.Args {
		flag, _, _ := strings.Cut(a, "=")
		switch flag {
		case "--namespace":
			a = "--namespace=" + namespace // the kubelet expands $(POD_NAMESPACE)
		case "--port":
			a = "--port=" + strconv.Itoa(ports[0])
		case "--metrics-bind-address":
			a = "--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[1])
		case "--health-probe-bind-address":
			a = "--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(ports[2])
		}
		args = append(args, a)
	}
	if !slices.Contains(args, "--cert-mode=self") || !slices.Contains(args, "--owner=isolator") {
		t.Fatalf("the Deployment's args %v: want --cert-mode=self and --owner=isolator", c.Args)
	}
	args = append(args, "--kubeconfig", kubeconfig, "--host", "127.0.0.1", "--cert-extra-sans=127.0.0.1", "--shutdown-delay=500ms")
	env := []string{"POD_NAMESPACE=" + namespace}
	for _, e := range c.Env {
		if e.Value != "" {
			env = append(env, e.Name+"="+e.Value)
		}
	}
	bin, err := harness.WebhookBinary()
	if err != nil {
		t.Fatal(err)
	}
	p := harness.StartProcessForTest(t, harness.ProcessSpec{Name: "isolator-" + namespace, Path: bin, Args: args, Env: env,
		LogPath: filepath.Join(cp.LogDir(), "isolator-"+namespace+".log")})
	if err := harness.WaitReady(ctx, p, harness.ReadyCheck{URL: "http://127.0.0.1:" + strconv.Itoa(ports[2]) + "/readyz"}); err != nil {
		t.Fatal(err)
	}
	// Point the installed webhook configurations at the process (the caBundle is the
	// webhook's own, which it injected).
	base := "https://127.0.0.1:" + strconv.Itoa(ports[0])
	for _, kind := range []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"} {
		path := "/mutate-pods"
		if kind == "validatingwebhookconfigurations" {
			path = "/validate-policy"
		}
		patch, _ := json.Marshal([]map[string]any{
			{"op": "remove", "path": "/webhooks/0/clientConfig/service"},
			{"op": "add", "path": "/webhooks/0/clientConfig/url", "value": base + path},
		})
		res := cp.Client().AdmissionregistrationV1().RESTClient().Patch(types.JSONPatchType).Resource(kind).Name("isolator").Body(patch).Do(ctx)
		if err := res.Error(); err != nil {
			t.Fatalf("pointing %s at the webhook: %v", kind, err)
		}
	}
	return p
}

// TestHelmChart installs the chart with Helm's Go SDK (server-side apply) into the
// default namespace and into platform-isolator, upgrades it to a second set of values,
// runs the webhook as the chart deploys it and checks it admits pods, then uninstalls
// and checks that nothing of isolator is left, the backstop and the certificate Secret
// the webhook created at run time included.
func TestHelmChart(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	c := newCluster(t)
	for _, ns := range []string{"isolator-system", "platform-isolator"} {
		t.Run(ns, func(t *testing.T) {
			ctx := context.Background()
			t.Cleanup(func() {
				_ = cp.Client().CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
			})
			h := newHelm(t, ns)
			// Other tests here apply the RuntimeClasses on their own; Helm installs
			// them as part of the release, and only on a cluster without them.
			for _, rc := range []string{"kata-rc", "runc-rc"} {
				if err := cp.Client().NodeV1().RuntimeClasses().Delete(ctx, rc, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
					t.Fatal(err)
				}
			}
			if left := c.leftovers(t, ns); len(left) > 0 {
				t.Fatalf("isolator objects before the install: %v", left)
			}

			// 1. Install with the defaults.
			h.install(t, helmInstallValues)
			first := c.checkInstalled(t, ns, helmInstallValues)
			if find := func(kind string) bool {
				return slices.ContainsFunc(first, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind })
			}; !find("Certificate") || !find("DaemonSet") || !find("ResourceQuota") {
				t.Fatalf("the default install lacks a Certificate, the DaemonSet or the ResourceQuota")
			}

			// 2. Upgrade to the second values: the cert-manager objects go, the rest comes.
			h.upgrade(t, helmUpgradeValues)
			second := c.checkInstalled(t, ns, helmUpgradeValues)
			kept := map[string]bool{}
			for _, o := range second {
				kept[o.GetKind()+"/"+o.GetName()] = true
			}
			for _, o := range first {
				if kept[o.GetKind()+"/"+o.GetName()] {
					continue
				}
				if _, err := c.get(ctx, o); !apierrors.IsNotFound(err) {
					t.Errorf("%s %s: still there after the upgrade removed it (%v)", o.GetKind(), o.GetName(), err)
				}
			}
			d, err := cp.Client().AppsV1().Deployments(ns).Get(ctx, "isolator-webhook", metav1.GetOptions{})
			if err != nil || *d.Spec.Replicas != 2 {
				t.Fatalf("Deployment after the upgrade: %v %v", d, err)
			}

			// 3. The webhook as the chart runs it admits pods. The policy is the
			// ConfigMap the chart's policy value renders, created as Helm would: Helm
			// can't apply it here itself, because the webhook configurations are pointed
			// at the process by URL (there is no kubelet behind the Service), and an
			// upgrade would point them back.
			startChartWebhook(t, ns)
			for _, name := range []string{"helm-tenant-a", "helm-plain"} {
				if _, err := cp.CreateNamespace(ctx, name, nil); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
			}
			withPolicy, err := charts.Render(ns, "v1.37.2", parseValues(t, helmPolicyValues))
			if err != nil {
				t.Fatal(err)
			}
			policyCM := findObject(withPolicy, "ConfigMap", "isolator-policy")
			if policyCM == nil {
				t.Fatal("the chart rendered no policy ConfigMap")
			}
			eventually(t, "the chart's policy to be accepted", func(ctx context.Context) error {
				_, err := c.dyn.Resource(corev1.SchemeGroupVersion.WithResource("configmaps")).Namespace(ns).Create(ctx, policyCM, metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					return nil
				}
				return err
			})
			eventually(t, "a tenant pod to get kata-rc", func(ctx context.Context) error {
				p, err := cp.Client().CoreV1().Pods("helm-tenant-a").Create(ctx, testPod("app", "registry.example.com/a/app:1", ""), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
				if err != nil {
					return err
				}
				if got := harness.ClassOf(p); got != "kata-rc" {
					return fmt.Errorf("runtimeClassName %q", got)
				}
				return nil
			})
			p, err := cp.Client().CoreV1().Pods("helm-plain").Create(ctx, testPod("app", "registry.example.com/a/app:1", ""), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			harness.AdmittedWith(t, "a pod elsewhere", p, err, "runc-rc")
			// isolator's own namespace is excluded, whatever it is called.
			p, err = cp.Client().CoreV1().Pods(ns).Create(ctx, testPod("app", "registry.example.com/a/app:1", ""), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			harness.AdmittedWith(t, "a pod in isolator's namespace", p, err, "")
			// The policy validator answers for this namespace.
			bad := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "broken", Labels: map[string]string{"isolator.dev/policy": "true"}},
				Data: map[string]string{"policy.yaml": "apiVersion: isolator.dev/v1alpha2\nkind: RuntimePolicy\nspec: {rules: [{name: x}]}\n"}}
			_, err = cp.Client().CoreV1().ConfigMaps(ns).Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			harness.RefusedBy(t, "an invalid policy in isolator's namespace", err, harness.ByPolicyWebhook)
			checkLabelGuard(t, ns)
			// The run-time objects exist, owned by the webhook configuration.
			eventually(t, "the backstop and the certificate Secret", func(ctx context.Context) error {
				vap, err := cp.Client().AdmissionregistrationV1().ValidatingAdmissionPolicies().Get(ctx, "isolator-backstop", metav1.GetOptions{})
				if err != nil {
					return err
				}
				sec, err := cp.Client().CoreV1().Secrets(ns).Get(ctx, "isolator-webhook-tls", metav1.GetOptions{})
				if err != nil {
					return err
				}
				for _, refs := range [][]metav1.OwnerReference{vap.OwnerReferences, sec.OwnerReferences} {
					if len(refs) != 1 || refs[0].Kind != "MutatingWebhookConfiguration" || refs[0].Name != "isolator" {
						return fmt.Errorf("owner references %v", refs)
					}
				}
				return nil
			})

			// The policy stood for the chart's own: it goes as Helm would take it.
			if err := cp.Client().CoreV1().ConfigMaps(ns).Delete(ctx, "isolator-policy", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}

			// 4. Uninstall, with the webhook still running as it would while its pods
			// terminate: nothing of isolator is left, and nothing comes back.
			h.uninstall(t)
			eventually(t, "nothing of isolator left", func(context.Context) error {
				if left := c.leftovers(t, ns); len(left) > 0 {
					return fmt.Errorf("left behind: %v", left)
				}
				return nil
			})
			time.Sleep(3 * time.Second)
			if left := c.leftovers(t, ns); len(left) > 0 {
				t.Errorf("recreated after the uninstall: %v", left)
			}
		})
	}
}

func findObject(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// checkLabelGuard: the namespace label guard allows isolator's own service accounts in
// this installation's namespace, and no others of the same name elsewhere.
func checkLabelGuard(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	// Give both service account names the right to label namespaces, so that only the
	// guard decides.
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "helm-test-namespace-editor"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "update", "patch"}}}}
	if _, err := cp.Client().RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	other := map[bool]string{true: "platform-isolator", false: "isolator-system"}[ns == "isolator-system"]
	users := map[string]bool{ // user -> allowed by the guard
		"system:serviceaccount:" + ns + ":isolator-webhook":    true,
		"system:serviceaccount:" + other + ":isolator-webhook": false,
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "helm-test-namespace-editor"},
		RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: role.Name}}
	for _, u := range slices.Sorted(maps.Keys(users)) {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: u})
	}
	if _, err := cp.Client().RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client().RbacV1().ClusterRoleBindings().Delete(context.Background(), binding.Name, metav1.DeleteOptions{})
		_ = cp.Client().RbacV1().ClusterRoles().Delete(context.Background(), role.Name, metav1.DeleteOptions{})
	})
	for u, allowed := range users {
		cfg, err := cp.UserConfig(u, "system:serviceaccounts", "system:authenticated")
		if err != nil {
			t.Fatal(err)
		}
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		patch := []byte(`{"metadata":{"labels":{"isolator.dev/trust":"trusted"}}}`)
		var lastErr error
		eventually(t, "RBAC for "+u, func(ctx context.Context) error {
			_, lastErr = client.CoreV1().Namespaces().Patch(ctx, "helm-plain", types.MergePatchType, patch, metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
			if lastErr != nil {
				if d, ok := harness.DefenceOf(lastErr); ok && d == harness.ByRBAC {
					return lastErr // the binding is not in the authorizer's cache yet
				}
			}
			return nil
		})
		if allowed {
			if lastErr != nil {
				t.Errorf("%s labelling a namespace: %v, want allowed", u, lastErr)
			}
		} else {
			harness.RefusedBy(t, u+" labelling a namespace", lastErr, harness.ByLabelGuard)
		}
	}
}
