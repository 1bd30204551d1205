package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/isolator-dev/isolator/policy"
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
	// LargeBodySlots bounds the bodies over 64 KiB read at once; nil makes LargeBodies.
	LargeBodySlots chan struct{}
	// BodyReadTimeout bounds reading one request body; 0 means BodyReadTimeout.
	BodyReadTimeout time.Duration
	slotsOnce       sync.Once

	// decisions and auditDecisions cache the counters of Metrics by decisionKey.
	decisions, auditDecisions sync.Map
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
func (m *PodMutator) decide(ctx context.Context, req *podRequest) verdict {
	start := time.Now()
	if req.UID == "" && req.Resource.Resource == "" {
		return *errored(http.StatusBadRequest, errors.New("the body is not an AdmissionReview with a request: expected apiVersion admission.k8s.io/v1, kind AdmissionReview"))
	}
	if req.Resource != podResource {
		return *errored(http.StatusBadRequest, fmt.Errorf("%s expects pods, got %q: check the MutatingWebhookConfiguration's rules", MutatePath, req.Resource.Resource))
	}
	update := req.Operation == admissionv1.Update
	if (req.Operation != admissionv1.Create && !update) || req.SubResource != "" {
		return allowed("isolator decides pods on CREATE, and on UPDATE that changes an image")
	}
	pod := req.Object
	if pod == nil {
		return *errored(http.StatusBadRequest, errors.New("the AdmissionReview has no request.object: a Pod is required"))
	}
	ns := req.Namespace
	if ns == "" {
		ns = pod.Metadata.Namespace
	}
	nsLabels, found, err := m.Namespaces.Labels(ctx, ns)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "namespace lookup failed", "namespace", ns, "pod", pod.DisplayName())
		return *errored(http.StatusInternalServerError, err)
	}
	if !found {
		return *errored(http.StatusBadRequest, fmt.Errorf("namespace %q does not exist", ns))
	}
	var facts policy.Facts
	if m.Images != nil {
		facts, err = pod.FactsCached(ns, nsLabels, m.Images)
	} else {
		facts, err = pod.Facts(ns, nsLabels)
	}
	if err != nil {
		return m.finish(start, denied("isolator: "+err.Error()), nil, true)
	}
	if update {
		return m.decideUpdate(ctx, start, pod, &facts)
	}
	// A class that isolator set itself in an earlier pass (reinvocation) is not the
	// user's choice: it is decided afresh (policy.EvaluatePod).
	d, ownClass := m.Policy().EvaluatePod(pod, &facts)
	if ownClass && d.Action == policy.ActionKeep {
		// The apiserver calls again after the in-tree RuntimeClass plugin added the
		// class's overhead and scheduling: the decision stands, and it was counted the
		// first time.
		v := m.respond(ctx, pod, &d, ownClass)
		// The first call's audit annotations stand; the apiserver refuses to overwrite them.
		v.audit = [numAuditKeys]string{}
		return m.finish(start, v, &d, false)
	}
	v := m.respond(ctx, pod, &d, ownClass)
	switch d.Action {
	case policy.ActionDeny:
		ctrl.LoggerFrom(ctx).Info("pod denied", "namespace", ns, "pod", pod.DisplayName(), "rule", d.Rule, "reason", d.Reason)
	case policy.ActionReplace:
		ctrl.LoggerFrom(ctx).Info("runtime class replaced", "namespace", ns, "pod", pod.DisplayName(), "rule", d.Rule,
			"from", *pod.Spec.RuntimeClassName, "to", d.RuntimeClass)
	}
	return m.finish(start, v, &d, true)
}

// decideUpdate answers an update of a running pod, which the webhook configuration
// sends only when it changes an image: runtimeClassName can't change any more, so the
// update is refused when the new images need a sandboxed class the pod doesn't run in.
func (m *PodMutator) decideUpdate(ctx context.Context, start time.Time, pod *policy.Pod, facts *policy.Facts) verdict {
	d := m.Policy().EvaluateUpdate(facts)
	v := allowed("")
	if d.Action == policy.ActionDeny {
		v = denied("isolator: rule " + d.Rule + " refuses this update: " + d.Reason)
		ctrl.LoggerFrom(ctx).Info("image update denied", "namespace", facts.Namespace, "pod", pod.DisplayName(), "rule", d.Rule, "reason", d.Reason)
	}
	v.audit[auditAtAction] = string(d.Action)
	v.audit[auditAtRuntimeClass] = d.RuntimeClass
	v.audit[auditAtRule] = d.Rule
	v.audit[auditAtReason] = d.Reason
	return m.finish(start, v, &d, true)
}

func (m *PodMutator) respond(ctx context.Context, pod *policy.Pod, d *policy.Decision, ownClass bool) verdict {
	var v verdict
	switch d.Action {
	case policy.ActionSet, policy.ActionReplace:
		if _, exists, _ := m.RuntimeClasses.Labels(ctx, d.RuntimeClass); !exists && m.RuntimeClasses.Synced() {
			d.Action = policy.ActionDeny
			d.Reason = "RuntimeClass " + d.RuntimeClass + " does not exist in this cluster, and rule " + d.Rule +
				" requires it (" + d.Reason + "); create it (kubectl apply -k manifests/runtimeclasses) or change the policy"
			v = denied(denialMessage(d))
			break
		}
		v = verdict{allowed: true, patchOp: "add", class: d.RuntimeClass, rule: d.Rule, hasAnnotations: pod.Metadata.Annotations != nil}
		if pod.Spec.RuntimeClassName != nil {
			v.patchOp = "replace"
		}
		if d.Action == policy.ActionReplace && !ownClass {
			v.warning = "isolator replaced runtimeClassName " + *pod.Spec.RuntimeClassName + " with " + d.RuntimeClass +
				" (rule " + d.Rule + "): " + d.Reason
		}
	case policy.ActionDeny:
		v = denied(denialMessage(d))
	default: // keep, none
		v = allowed("")
	}
	v.audit[auditAtAction] = string(d.Action)
	v.audit[auditAtRuntimeClass] = d.RuntimeClass
	v.audit[auditAtRule] = d.Rule
	v.audit[auditAtReason] = d.Reason
	v.audit[auditAtAuditAction] = string(d.Audit.Action)
	v.audit[auditAtAuditRuntimeClass] = d.Audit.RuntimeClass
	v.audit[auditAtAuditRule] = d.Audit.Rule
	return v
}

func denialMessage(d *policy.Decision) string {
	return "isolator: rule " + d.Rule + " denies this pod: " + d.Reason
}

// decisionKey names one series of isolator_admission_decisions_total.
type decisionKey struct{ class, rule, action string }

// finish records the time taken and, when count is set, the decision: d nil is a pod
// refused before any rule applied (an invalid image reference).
func (m *PodMutator) finish(start time.Time, v verdict, d *policy.Decision, count bool) verdict {
	if m.Metrics == nil {
		return v
	}
	switch {
	case !count:
	case d != nil:
		m.counter(m.Metrics.Decisions, &m.decisions, decisionKey{d.RuntimeClass, d.Rule, string(d.Action)}).Inc()
		if d.Audit.Action != "" {
			m.counter(m.Metrics.AuditDecisions, &m.auditDecisions, decisionKey{d.Audit.RuntimeClass, d.Audit.Rule, string(d.Audit.Action)}).Inc()
		}
	default:
		m.counter(m.Metrics.Decisions, &m.decisions, decisionKey{"", "", string(policy.ActionDeny)}).Inc()
	}
	m.Metrics.DecisionDuration.Observe(time.Since(start).Seconds())
	return v
}

// counter returns the series of vec for k, remembered in cache: a lock-free map load
// instead of the vector's hashing and read lock on every admission. The series are
// bounded by the rules, classes and actions, as the metric's labels are.
func (m *PodMutator) counter(vec *prometheus.CounterVec, cache *sync.Map, k decisionKey) prometheus.Counter {
	if c, ok := cache.Load(k); ok {
		return c.(prometheus.Counter)
	}
	c := vec.WithLabelValues(k.class, k.rule, k.action)
	cache.Store(k, c)
	return c
}
