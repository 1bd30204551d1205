package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/isolator-dev/isolator/policy"
	"github.com/isolator-dev/isolator/webhook/admissionwire"
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

// decide answers one pod admission with exactly one of: a patch that sets
// spec.runtimeClassName (one op) and records isolator's annotations; a denial that
// names the rule, the reason and what would be accepted; or allow. It is the list of
// steps of an admission, in the manner of the in-tree RuntimeClass plugin's Admit.
func (m *PodMutator) decide(ctx context.Context, req *admissionwire.Request) admissionwire.Verdict {
	start := time.Now()
	if v, ignore := shouldIgnore(req); ignore {
		return v
	}
	facts, v, ok := m.facts(ctx, req)
	if !ok {
		return m.finishRefused(start, v)
	}
	if req.Operation == admissionv1.Update {
		return m.decideUpdate(ctx, start, req, &facts)
	}
	d, ownClass := m.Policy().EvaluatePod(req.Object, &facts)
	if ownClass && d.Action == policy.ActionKeep {
		return m.finish(start, confirm(), &d, false)
	}
	m.checkClassExists(ctx, &d)
	logDecision(ctx, req, &d)
	return m.finish(start, respond(req.Object, &d, ownClass), &d, true)
}

// shouldIgnore answers what isolator doesn't decide: a request that is not a pod's,
// and operations other than CREATE and UPDATE of the pod itself.
func shouldIgnore(req *admissionwire.Request) (admissionwire.Verdict, bool) {
	switch {
	case req.UID == "" && req.Resource.Resource == "":
		return *admissionwire.Errored(http.StatusBadRequest, errors.New("the body is not an AdmissionReview with a request: expected apiVersion admission.k8s.io/v1, kind AdmissionReview")), true
	case req.Resource != podResource:
		return *admissionwire.Errored(http.StatusBadRequest, fmt.Errorf("%s expects pods, got %q: check the MutatingWebhookConfiguration's rules", MutatePath, req.Resource.Resource)), true
	case (req.Operation != admissionv1.Create && req.Operation != admissionv1.Update) || req.SubResource != "":
		return admissionwire.Allowed("isolator decides pods on CREATE, and on UPDATE that changes an image"), true
	case req.Object == nil:
		return *admissionwire.Errored(http.StatusBadRequest, errors.New("the AdmissionReview has no request.object: a Pod is required")), true
	}
	return admissionwire.Verdict{}, false
}

// facts gathers what the decision depends on: the namespace's labels and the pod's
// normalised images. A pod whose image is not a valid reference is refused here
// (ok false, a denial to count); a failed lookup is an error (ok false, not counted).
func (m *PodMutator) facts(ctx context.Context, req *admissionwire.Request) (f policy.Facts, v admissionwire.Verdict, ok bool) {
	pod := req.Object
	ns := req.Namespace
	if ns == "" {
		ns = pod.Metadata.Namespace
	}
	nsLabels, found, err := m.Namespaces.Labels(ctx, ns)
	switch {
	case err != nil:
		requestLog(ctx, req).Error(err, "namespace lookup failed")
		return f, *admissionwire.Errored(http.StatusInternalServerError, err), false
	case !found:
		return f, *admissionwire.Errored(http.StatusBadRequest, fmt.Errorf("namespace %q does not exist", ns)), false
	}
	if m.Images != nil {
		f, err = pod.FactsCached(ns, nsLabels, m.Images)
	} else {
		f, err = pod.Facts(ns, nsLabels)
	}
	if err != nil {
		return f, admissionwire.Denied("isolator: " + err.Error()), false
	}
	return f, v, true
}

// confirm answers the apiserver's second call after the in-tree RuntimeClass plugin
// added the class's overhead and scheduling: the decision stands, was counted the first
// time, and the first call's audit annotations stand (the apiserver refuses to
// overwrite them).
func confirm() admissionwire.Verdict { return admissionwire.Allowed("") }

// checkClassExists turns a decision to set a class the cluster does not have into a
// denial that says so: the apiserver would refuse the pod anyway, less clearly.
func (m *PodMutator) checkClassExists(ctx context.Context, d *policy.Decision) {
	if d.Action != policy.ActionSet && d.Action != policy.ActionReplace {
		return
	}
	if _, exists, _ := m.RuntimeClasses.Labels(ctx, d.RuntimeClass); exists || !m.RuntimeClasses.Synced() {
		return
	}
	d.Action = policy.ActionDeny
	d.Reason = "RuntimeClass " + d.RuntimeClass + " does not exist in this cluster, and rule " + d.Rule +
		" requires it (" + d.Reason + "); create it (kubectl apply -k manifests/runtimeclasses) or change the policy"
}

// respond renders a decision: the one patch op and the annotations, a denial, or allow,
// with the decision in the response's audit annotations.
func respond(pod *policy.Pod, d *policy.Decision, ownClass bool) admissionwire.Verdict {
	var v admissionwire.Verdict
	switch d.Action {
	case policy.ActionSet, policy.ActionReplace:
		v = admissionwire.Verdict{Allowed: true, PatchOp: "add", Class: d.RuntimeClass, Rule: d.Rule, HasAnnotations: pod.Metadata.Annotations != nil}
		if pod.Spec.RuntimeClassName != nil {
			v.PatchOp = "replace"
		}
		if d.Action == policy.ActionReplace && !ownClass {
			v.Warning = "isolator replaced runtimeClassName " + *pod.Spec.RuntimeClassName + " with " + d.RuntimeClass +
				" (rule " + d.Rule + "): " + d.Reason
		}
	case policy.ActionDeny:
		v = admissionwire.Denied(denialMessage(d))
	default: // keep, none
		v = admissionwire.Allowed("")
	}
	setAudit(&v, d)
	v.Audit[admissionwire.AuditAuditAction] = string(d.Audit.Action)
	v.Audit[admissionwire.AuditAuditRuntimeClass] = d.Audit.RuntimeClass
	v.Audit[admissionwire.AuditAuditRule] = d.Audit.Rule
	return v
}

func setAudit(v *admissionwire.Verdict, d *policy.Decision) {
	v.Audit[admissionwire.AuditAction] = string(d.Action)
	v.Audit[admissionwire.AuditRuntimeClass] = d.RuntimeClass
	v.Audit[admissionwire.AuditRule] = d.Rule
	v.Audit[admissionwire.AuditReason] = d.Reason
}

// decideUpdate answers an update of a running pod, which the webhook configuration
// sends only when it changes an image: runtimeClassName can't change any more, so the
// update is refused when the new images need a sandboxed class the pod doesn't run in.
func (m *PodMutator) decideUpdate(ctx context.Context, start time.Time, req *admissionwire.Request, facts *policy.Facts) admissionwire.Verdict {
	d := m.Policy().EvaluateUpdate(facts)
	v := admissionwire.Allowed("")
	if d.Action == policy.ActionDeny {
		v = admissionwire.Denied("isolator: rule " + d.Rule + " refuses this update: " + d.Reason)
		requestLog(ctx, req).Info("image update denied", "rule", d.Rule, "reason", d.Reason)
	}
	setAudit(&v, &d)
	return m.finish(start, v, &d, true)
}

func denialMessage(d *policy.Decision) string {
	return "isolator: rule " + d.Rule + " denies this pod: " + d.Reason
}

// requestLog is the logger of one admission: it carries the request's UID, the
// namespace and the pod, as controller-runtime's Webhook.Handle puts them in its
// context. It is made only when something is logged, so that admissions that log
// nothing pay nothing for it.
func requestLog(ctx context.Context, req *admissionwire.Request) logr.Logger {
	ns := req.Namespace
	pod := "(none)"
	if req.Object != nil {
		pod = req.Object.DisplayName()
		if ns == "" {
			ns = req.Object.Metadata.Namespace
		}
	}
	return ctrl.LoggerFrom(ctx).WithValues("uid", req.UID, "namespace", ns, "pod", pod)
}

// logDecision logs the decisions an operator wants to see: denials and replacements.
func logDecision(ctx context.Context, req *admissionwire.Request, d *policy.Decision) {
	switch d.Action {
	case policy.ActionDeny:
		requestLog(ctx, req).Info("pod denied", "rule", d.Rule, "reason", d.Reason)
	case policy.ActionReplace:
		requestLog(ctx, req).Info("runtime class replaced", "rule", d.Rule, "from", *req.Object.Spec.RuntimeClassName, "to", d.RuntimeClass)
	}
}

// decisionKey names one series of isolator_admission_decisions_total.
type decisionKey struct{ class, rule, action string }

// finish records the time taken and, when count is set, the decision: d nil is a pod
// refused before any rule applied (an invalid image reference).
func (m *PodMutator) finish(start time.Time, v admissionwire.Verdict, d *policy.Decision, count bool) admissionwire.Verdict {
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

// finishRefused finishes a request refused before any rule applied: a denial (an
// invalid image reference) counts, an error does not.
func (m *PodMutator) finishRefused(start time.Time, v admissionwire.Verdict) admissionwire.Verdict {
	if v.Code == http.StatusForbidden {
		return m.finish(start, v, nil, true)
	}
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
