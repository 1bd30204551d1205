package app

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"

	"github.com/isolator-dev/isolator/policy"
	"github.com/isolator-dev/isolator/webhook"
)

// TestExplainAgreesWithWebhook runs the same pods through the webhook's handler and
// through `policy explain`, and requires the same decision from both: action, class
// and rule. Among them are pods isolator already mutated, whose class the webhook
// decides afresh, with the policy in force and with a policy that has changed since.
func TestExplainAgreesWithWebhook(t *testing.T) {
	policies, err := os.ReadFile(examplePolicies)
	if err != nil {
		t.Fatal(err)
	}
	srcs, errs := policy.ReadSources("policies.yaml", bytes.NewReader(policies))
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	snap, err := policy.Compile(srcs...)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(examplePods)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := readPods("pods.yaml", data)
	if err != nil {
		t.Fatal(err)
	}
	// Pods isolator mutated earlier: one whose class is still the decision, one whose
	// class the policy no longer decides (it sandboxed everything in shop before).
	stillKata := mutated("shop", "storefront-2", "registry.example.com/shop/storefront:1.4.2", "kata-rc", "platform/untrusted-namespaces")
	nowRunc := mutated("payments", "ledger-2", "registry.example.com/platform/ledger:2", "kata-rc", "old/sandbox-everything")
	faked := mutated("payments", "hub", "nginx", "runc-rc", "platform/defaultRuntimeClass")
	nsLabels := map[string]map[string]string{}
	for _, p := range pods {
		nsLabels[p.pod.Metadata.Namespace] = p.nsLabels
	}
	for _, p := range []policy.Pod{stillKata, nowRunc, faked} {
		pods = append(pods, podInput{pod: p, nsLabels: nsLabels[p.Metadata.Namespace]})
	}

	ns := webhook.NewMetaIndex(corev1.SchemeGroupVersion.WithKind("Namespace"), nil)
	for name, labels := range nsLabels {
		ns.Set(name, labels)
	}
	ns.MarkSynced()
	rcs := webhook.NewMetaIndex(nodev1.SchemeGroupVersion.WithKind("RuntimeClass"), nil)
	for _, c := range snap.Classes() {
		rcs.Set(c.Name, nil)
	}
	rcs.MarkSynced()
	mutator := &webhook.PodMutator{Policy: func() *policy.Snapshot { return snap }, Namespaces: ns, RuntimeClasses: rcs}

	actions := map[string]int{}
	for _, in := range pods {
		e := explainPod(snap, in)
		got := admit(t, mutator, in.pod)
		if got.action != e.Action || got.class != e.RuntimeClass || got.rule != e.Rule {
			t.Errorf("pod %s: the webhook decides {%s %s %s}, explain says {%s %s %s} (%s)",
				e.Pod, got.action, got.class, got.rule, e.Action, e.RuntimeClass, e.Rule, e.Reason)
		}
		actions[e.Action]++
	}
	if len(pods) < 10 || actions["set"] == 0 || actions["deny"] == 0 || actions["keep"] == 0 {
		t.Errorf("%d pods, actions %v: the sample misses a kind of decision", len(pods), actions)
	}
	t.Logf("%d pods agree: %v", len(pods), actions)
}

func mutated(ns, name, image, class, rule string) policy.Pod {
	return policy.Pod{
		Metadata: policy.PodMeta{Name: name, Namespace: ns, Annotations: map[string]string{policy.AnnotationRuntimeClass: class, policy.AnnotationRule: rule}},
		Spec:     policy.PodSpec{RuntimeClassName: &class, Containers: []policy.Container{{Name: "app", Image: image}}},
	}
}

type admitted struct{ action, class, rule string }

// admit sends the pod through the webhook's handler as a CREATE and reads the decision
// from the response: its audit annotations, which every decision carries, and for a
// confirming second call (no annotations: the first call's stand) the pod's own class.
func admit(t *testing.T, h http.Handler, p policy.Pod) admitted {
	t.Helper()
	object, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	review := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u",` +
		`"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"` + p.Metadata.Namespace + `","operation":"CREATE","object":` + string(object) + `}}`
	req := httptest.NewRequest(http.MethodPost, webhook.MutatePath, strings.NewReader(review))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("pod %s: not an AdmissionReview: %v\n%s", p.Metadata.Name, err, rec.Body.String())
	}
	a := out.Response.AuditAnnotations
	if a == nil && out.Response.Allowed && p.ClassSetByIsolator() {
		return admitted{string(policy.ActionKeep), *p.Spec.RuntimeClassName, p.Metadata.Annotations[policy.AnnotationRule]}
	}
	return admitted{a["action"], a["runtime-class"], a["rule"]}
}
