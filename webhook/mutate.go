package webhook

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/isolator-dev/isolator/policy"
)

// Annotations isolator sets on the pods it mutates.
const (
	AnnotationRuntimeClass = "isolator.dev/runtime-class"
	AnnotationRule         = "isolator.dev/rule"
)

// Audit annotation keys on admission responses. The apiserver prefixes them with the
// webhook's name: pods.isolator.dev/action and so on.
const (
	auditAction            = "action"
	auditRuntimeClass      = "runtime-class"
	auditRule              = "rule"
	auditReason            = "reason"
	auditAuditAction       = "audit-action"
	auditAuditRuntimeClass = "audit-runtime-class"
	auditAuditRule         = "audit-rule"
)

// MutatePath is where the pod mutator is served.
const MutatePath = "/mutate-pods"

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// PodMutator applies the policy in force to every pod created.
type PodMutator struct {
	Policy         func() *policy.Snapshot
	Namespaces     *MetaIndex
	RuntimeClasses *MetaIndex
	Metrics        *Metrics
	// Images caches normalised image references; nil normalises every time.
	Images *policy.ImageCache
}

// podRequest is the part of an AdmissionReview request the mutator reads.
type podRequest struct {
	UID         types.UID                   `json:"uid"`
	Resource    metav1.GroupVersionResource `json:"resource"`
	SubResource string                      `json:"subResource,omitempty"`
	Namespace   string                      `json:"namespace,omitempty"`
	Operation   admissionv1.Operation       `json:"operation"`
	Object      *policy.Pod                 `json:"object,omitempty"`
}

// decide answers one pod admission with exactly one of: a patch that sets
// spec.runtimeClassName (one op) and records isolator's annotations; a denial that
// names the rule, the reason and what would be accepted; or allow.
func (m *PodMutator) decide(ctx context.Context, req *podRequest) admission.Response {
	start := time.Now()
	if req.UID == "" && req.Resource.Resource == "" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("the body is not an AdmissionReview with a request: expected apiVersion admission.k8s.io/v1, kind AdmissionReview"))
	}
	if req.Resource != podResource {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("%s expects pods, got %q: check the MutatingWebhookConfiguration's rules", MutatePath, req.Resource.Resource))
	}
	if req.Operation != admissionv1.Create || req.SubResource != "" {
		return admission.Allowed("isolator decides pods on CREATE only")
	}
	pod := req.Object
	if pod == nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("the AdmissionReview has no request.object: a Pod is required"))
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Metadata.Namespace
	}
	nsLabels, found, err := m.Namespaces.Labels(ctx, ns)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "namespace lookup failed", "namespace", ns, "pod", pod.DisplayName())
		return admission.Errored(http.StatusInternalServerError, err)
	}
	if !found {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("namespace %q does not exist", ns))
	}
	var facts policy.Facts
	if m.Images != nil {
		facts, err = pod.FactsCached(ns, nsLabels, m.Images)
	} else {
		facts, err = pod.Facts(ns, nsLabels)
	}
	if err != nil {
		return m.finish(start, admission.Denied("isolator: "+err.Error()), nil, true)
	}
	// A class that isolator set itself in an earlier pass (reinvocation) is not the
	// user's choice: decide afresh. A pod that fakes the annotation only gets decided.
	ownClass := false
	if facts.RuntimeClassName != "" && pod.Metadata.Annotations[AnnotationRuntimeClass] == facts.RuntimeClassName {
		facts.RuntimeClassName, ownClass = "", true
	}
	d := m.Policy().Evaluate(&facts)
	if ownClass && d.Action == policy.ActionSet && d.RuntimeClass == *pod.Spec.RuntimeClassName {
		// The apiserver calls again after the in-tree RuntimeClass plugin added the
		// class's overhead and scheduling: the decision stands, and it was counted the
		// first time.
		d.Action = policy.ActionKeep
		return m.finish(start, m.respond(ctx, pod, &d, ownClass), &d, false)
	}
	resp := m.respond(ctx, pod, &d, ownClass)
	switch d.Action {
	case policy.ActionDeny:
		ctrl.LoggerFrom(ctx).Info("pod denied", "namespace", ns, "pod", pod.DisplayName(), "rule", d.Rule, "reason", d.Reason)
	case policy.ActionReplace:
		ctrl.LoggerFrom(ctx).Info("runtime class replaced", "namespace", ns, "pod", pod.DisplayName(), "rule", d.Rule,
			"from", *pod.Spec.RuntimeClassName, "to", d.RuntimeClass)
	}
	return m.finish(start, resp, &d, true)
}

func (m *PodMutator) respond(ctx context.Context, pod *policy.Pod, d *policy.Decision, ownClass bool) admission.Response {
	var resp admission.Response
	switch d.Action {
	case policy.ActionSet, policy.ActionReplace:
		if _, exists, _ := m.RuntimeClasses.Labels(ctx, d.RuntimeClass); !exists && m.RuntimeClasses.Synced() {
			d.Action = policy.ActionDeny
			d.Reason = "RuntimeClass " + d.RuntimeClass + " does not exist in this cluster, and rule " + d.Rule +
				" requires it (" + d.Reason + "); create it (kubectl apply -k manifests/runtimeclasses) or change the policy"
			resp = admission.Denied(denialMessage(d))
			break
		}
		op := "add"
		if pod.Spec.RuntimeClassName != nil {
			op = "replace"
		}
		resp = admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{Allowed: true}}
		resp.Patch = patchFor(op, d.RuntimeClass, d.Rule, pod.Metadata.Annotations != nil)
		pt := admissionv1.PatchTypeJSONPatch
		resp.PatchType = &pt
		if d.Action == policy.ActionReplace && !ownClass {
			resp.Warnings = []string{"isolator replaced runtimeClassName " + *pod.Spec.RuntimeClassName + " with " + d.RuntimeClass +
				" (rule " + d.Rule + "): " + d.Reason}
		}
	case policy.ActionDeny:
		resp = admission.Denied(denialMessage(d))
	default: // keep, none
		resp = admission.Allowed("")
	}
	resp.AuditAnnotations = make(map[string]string, 7)
	put := func(k, v string) {
		if v != "" {
			resp.AuditAnnotations[k] = v
		}
	}
	put(auditAction, string(d.Action))
	put(auditRuntimeClass, d.RuntimeClass)
	put(auditRule, d.Rule)
	put(auditReason, d.Reason)
	put(auditAuditAction, string(d.Audit.Action))
	put(auditAuditRuntimeClass, d.Audit.RuntimeClass)
	put(auditAuditRule, d.Audit.Rule)
	return resp
}

func denialMessage(d *policy.Decision) string {
	return "isolator: rule " + d.Rule + " denies this pod: " + d.Reason
}

// patchFor renders the JSON patch: one op on /spec/runtimeClassName, and isolator's
// annotations (one op when the pod has none yet, else one per key).
func patchFor(op, class, rule string, hasAnnotations bool) []byte {
	var b strings.Builder
	b.Grow(256)
	b.WriteString(`[{"op":"`)
	b.WriteString(op)
	b.WriteString(`","path":"/spec/runtimeClassName","value":`)
	b.WriteString(strconv.Quote(class))
	b.WriteString(`}`)
	if hasAnnotations {
		b.WriteString(`,{"op":"add","path":"/metadata/annotations/isolator.dev~1runtime-class","value":`)
		b.WriteString(strconv.Quote(class))
		b.WriteString(`},{"op":"add","path":"/metadata/annotations/isolator.dev~1rule","value":`)
		b.WriteString(strconv.Quote(rule))
		b.WriteString(`}]`)
	} else {
		b.WriteString(`,{"op":"add","path":"/metadata/annotations","value":{"isolator.dev/runtime-class":`)
		b.WriteString(strconv.Quote(class))
		b.WriteString(`,"isolator.dev/rule":`)
		b.WriteString(strconv.Quote(rule))
		b.WriteString(`}}]`)
	}
	return []byte(b.String())
}

// finish records the time taken and, when count is set, the decision: d nil is a pod
// refused before any rule applied (an invalid image reference).
func (m *PodMutator) finish(start time.Time, resp admission.Response, d *policy.Decision, count bool) admission.Response {
	if m.Metrics == nil {
		return resp
	}
	switch {
	case !count:
	case d != nil:
		m.Metrics.Decisions.WithLabelValues(d.RuntimeClass, d.Rule, string(d.Action)).Inc()
		if d.Audit.Action != "" {
			m.Metrics.AuditDecisions.WithLabelValues(d.Audit.RuntimeClass, d.Audit.Rule, string(d.Audit.Action)).Inc()
		}
	default:
		m.Metrics.Decisions.WithLabelValues("", "", string(policy.ActionDeny)).Inc()
	}
	m.Metrics.DecisionDuration.Observe(time.Since(start).Seconds())
	return resp
}
