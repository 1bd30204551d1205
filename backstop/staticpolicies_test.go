package backstop

import (
	"context"
	"os"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"
)

// The static ValidatingAdmissionPolicies in manifests/ protect what the backstop
// relies on: namespace labels that exempt a namespace, and node labels that say Kata
// is ready. These tests evaluate them with the apiserver's CEL code; the e2e tests
// run them in a real apiserver.

func loadStaticPolicy(t *testing.T, file string) *celPolicy {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := utilyaml.NewYAMLOrJSONDecoder(f, 4096)
	var vap admissionregistrationv1.ValidatingAdmissionPolicy
	if err := dec.Decode(&vap); err != nil || vap.Kind != "ValidatingAdmissionPolicy" {
		t.Fatalf("%s: first document is not a ValidatingAdmissionPolicy: %v", file, err)
	}
	return compilePolicy(t, &vap)
}

var (
	admin     = &user.DefaultInfo{Name: "kubernetes-admin", Groups: []string{"system:masters", "system:authenticated"}}
	tenant    = &user.DefaultInfo{Name: "alice", Groups: []string{"system:authenticated"}}
	webhookSA = &user.DefaultInfo{Name: "system:serviceaccount:isolator-system:isolator-webhook", Groups: []string{"system:serviceaccounts"}}
)

func namespace(labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: labels},
	}
}

func TestNamespaceLabelsPolicy(t *testing.T) {
	p := loadStaticPolicy(t, "../manifests/base/namespace-labels-policy.yaml")
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}
	untrusted := map[string]string{"isolator.dev/trust": "untrusted", "team": "shop"}
	for _, tc := range []struct {
		name     string
		op       admission.Operation
		old, new map[string]string
		who      user.Info
		wantDeny bool
	}{
		{"tenant relabels to trusted", admission.Update, untrusted, map[string]string{"isolator.dev/trust": "trusted", "team": "shop"}, tenant, true},
		{"tenant removes the label", admission.Update, untrusted, map[string]string{"team": "shop"}, tenant, true},
		{"tenant adds an exemption", admission.Update, map[string]string{"team": "shop"}, map[string]string{"team": "shop", "isolator.dev/exempt": "true"}, tenant, true},
		{"tenant creates a trusted namespace", admission.Create, nil, map[string]string{"isolator.dev/trust": "trusted"}, tenant, true},
		{"tenant changes other labels", admission.Update, untrusted, map[string]string{"isolator.dev/trust": "untrusted", "team": "web"}, tenant, false},
		{"tenant creates a plain namespace", admission.Create, nil, map[string]string{"team": "shop"}, tenant, false},
		{"admin relabels", admission.Update, untrusted, map[string]string{"isolator.dev/trust": "trusted"}, admin, false},
		{"admin creates a trusted namespace", admission.Create, nil, map[string]string{"isolator.dev/trust": "trusted"}, admin, false},
		{"isolator relabels", admission.Update, untrusted, map[string]string{"isolator.dev/trust": "trusted"}, webhookSA, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var old runtime.Object
			if tc.op == admission.Update {
				old = namespace(tc.old)
			}
			v := p.admitRequest(context.Background(), gvr, gvk, tc.op, namespace(tc.new), old, tc.who)
			if len(v.errors) > 0 {
				t.Fatalf("CEL errors: %v", v.errors)
			}
			if v.denied != tc.wantDeny {
				t.Errorf("denied = %v (%v), want %v", v.denied, v.messages, tc.wantDeny)
			}
		})
	}
}

func TestNodeLabelsPolicy(t *testing.T) {
	p := loadStaticPolicy(t, "../manifests/node/node-labels-policy.yaml")
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "nodes"}
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Node"}
	agent := func(node string) user.Info {
		return &user.DefaultInfo{Name: "system:serviceaccount:isolator-system:isolator-node",
			Extra: map[string][]string{"authentication.kubernetes.io/node-name": {node}}}
	}
	base := func() *corev1.Node {
		return &corev1.Node{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
			ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{"isolator.dev/kata": "enabled", "isolator.dev/kata-runtime": "false"}},
			Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "isolator.dev/kata-not-ready", Effect: corev1.TaintEffectNoSchedule}}},
		}
	}
	for _, tc := range []struct {
		name     string
		change   func(n *corev1.Node)
		who      user.Info
		wantDeny bool
	}{
		{"marks its node ready and lifts the taint", func(n *corev1.Node) { n.Labels["isolator.dev/kata-runtime"] = "true"; n.Spec.Taints = nil }, agent("node1"), false},
		{"annotates its node", func(n *corev1.Node) { n.Annotations = map[string]string{"isolator.dev/kata-version": "3.9.0"} }, agent("node1"), false},
		{"patches another node", func(n *corev1.Node) { n.Labels["isolator.dev/kata-runtime"] = "true" }, agent("node2"), true},
		{"changes the admin's opt-in label", func(n *corev1.Node) { n.Labels["isolator.dev/kata"] = "disabled" }, agent("node1"), true},
		{"adds another label", func(n *corev1.Node) { n.Labels["node-role.kubernetes.io/control-plane"] = "" }, agent("node1"), true},
		{"adds another taint", func(n *corev1.Node) {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "x", Effect: corev1.TaintEffectNoExecute})
		}, agent("node1"), true},
		{"cordons the node", func(n *corev1.Node) { n.Spec.Unschedulable = true }, agent("node1"), true},
		{"an admin changes anything", func(n *corev1.Node) { n.Labels["isolator.dev/kata"] = "disabled" }, admin, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, updated := base(), base()
			tc.change(updated)
			v := p.admitRequest(context.Background(), gvr, gvk, admission.Update, updated, old, tc.who)
			if len(v.errors) > 0 {
				t.Fatalf("CEL errors: %v", v.errors)
			}
			if v.denied != tc.wantDeny {
				t.Errorf("denied = %v (%v), want %v", v.denied, v.messages, tc.wantDeny)
			}
		})
	}
}
