package backstop

import (
	"context"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/admission"
	plugincel "k8s.io/apiserver/pkg/admission/plugin/cel"
	"k8s.io/apiserver/pkg/admission/plugin/policy/validating"
	"k8s.io/apiserver/pkg/admission/plugin/webhook/matchconditions"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/cel/environment"
)

// celPolicy evaluates a generated ValidatingAdmissionPolicy with the apiserver's own
// admission CEL code (k8s.io/apiserver, the version the cluster runs), compiled the
// way the ValidatingAdmissionPolicy plugin compiles it. It stands in for the
// apiserver in unit tests; the e2e tests run the real one.
type celPolicy struct {
	validator   validating.Validator
	validations plugincel.ConditionEvaluator
}

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

func compilePolicy(t testing.TB, vap *admissionregistrationv1.ValidatingAdmissionPolicy) *celPolicy {
	t.Helper()
	comp, err := plugincel.NewCompositedCompiler(environment.MustBaseEnvSet(environment.DefaultCompatibilityVersion()))
	if err != nil {
		t.Fatal(err)
	}
	decls := plugincel.OptionalVariableDeclarations{HasAuthorizer: true}
	for _, v := range vap.Spec.Variables {
		res := comp.CompileAndStoreVariable(&validating.Variable{Name: v.Name, Expression: v.Expression}, decls, environment.StoredExpressions)
		if res.Error != nil {
			t.Fatalf("variable %s does not compile: %v\n%s", v.Name, res.Error, v.Expression)
		}
	}
	var conds, msgs []plugincel.ExpressionAccessor
	for _, v := range vap.Spec.Validations {
		conds = append(conds, &validating.ValidationCondition{Expression: v.Expression, Message: v.Message, Reason: v.Reason})
		msgs = append(msgs, &validating.MessageExpressionCondition{MessageExpression: v.MessageExpression})
	}
	var mcs []plugincel.ExpressionAccessor
	for i := range vap.Spec.MatchConditions {
		mcs = append(mcs, (*matchconditions.MatchCondition)(&vap.Spec.MatchConditions[i]))
	}
	validations := comp.CompileCondition(conds, decls, environment.StoredExpressions)
	matcher := matchconditions.NewMatcher(comp.CompileCondition(mcs, decls, environment.StoredExpressions), vap.Spec.FailurePolicy, "policy", "validate", vap.Name)
	v := validating.NewValidator(
		validations, matcher,
		comp.CompileCondition(nil, decls, environment.StoredExpressions),
		comp.CompileCondition(msgs, plugincel.OptionalVariableDeclarations{}, environment.StoredExpressions),
		vap.Spec.FailurePolicy, nil)
	return &celPolicy{validator: v, validations: validations}
}

type verdict struct {
	denied   bool
	messages []string
	errors   []string
}

func attributes(pod *corev1.Pod, username string) *admission.VersionedAttributes {
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	attr := admission.NewAttributesRecord(pod, nil, gvk, pod.Namespace, pod.Name, podsGVR, "", admission.Create, &metav1.CreateOptions{}, false, &user.DefaultInfo{Name: username})
	return &admission.VersionedAttributes{Attributes: attr, VersionedKind: gvk, VersionedObject: admission.NewLazyObject(pod)}
}

// admit evaluates the policy for a pod CREATE in namespace ns by username.
func (p *celPolicy) admit(ctx context.Context, pod *corev1.Pod, ns *corev1.Namespace, username string) verdict {
	return p.decide(ctx, podsGVR, attributes(pod, username), ns)
}

// update evaluates the policy for an UPDATE of pod old to pod in namespace ns by username.
func (p *celPolicy) update(ctx context.Context, old, pod *corev1.Pod, ns *corev1.Namespace, username string) verdict {
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Pod"}
	attr := admission.NewAttributesRecord(pod, old, gvk, pod.Namespace, pod.Name, podsGVR, "", admission.Update, &metav1.UpdateOptions{}, false, &user.DefaultInfo{Name: username})
	va := &admission.VersionedAttributes{Attributes: attr, VersionedKind: gvk,
		VersionedObject: admission.NewLazyObject(pod), VersionedOldObject: admission.NewLazyObject(old)}
	return p.decide(ctx, podsGVR, va, ns)
}

// admitRequest evaluates the policy for any request.
func (p *celPolicy) admitRequest(ctx context.Context, gvr schema.GroupVersionResource, gvk schema.GroupVersionKind, op admission.Operation, obj, old runtime.Object, u user.Info) verdict {
	var opts runtime.Object = &metav1.CreateOptions{}
	if op == admission.Update {
		opts = &metav1.UpdateOptions{}
	}
	m, _ := meta.Accessor(obj)
	attr := admission.NewAttributesRecord(obj, old, gvk, m.GetNamespace(), m.GetName(), gvr, "", op, opts, false, u)
	va := &admission.VersionedAttributes{Attributes: attr, VersionedKind: gvk, VersionedObject: admission.NewLazyObject(obj)}
	if old != nil {
		va.VersionedOldObject = admission.NewLazyObject(old)
	}
	return p.decide(ctx, gvr, va, nil)
}

func (p *celPolicy) decide(ctx context.Context, gvr schema.GroupVersionResource, va *admission.VersionedAttributes, ns *corev1.Namespace) verdict {
	res := p.validator.Validate(ctx, gvr, va, nil, ns, celconfig.RuntimeCELCostBudget, nil)
	var v verdict
	for _, d := range res.Decisions {
		switch {
		case d.Evaluation == validating.EvalError:
			v.errors = append(v.errors, d.Message)
			v.denied = true // failurePolicy Fail
		case d.Action == validating.ActionDeny:
			v.denied = true
			v.messages = append(v.messages, d.Message)
		}
	}
	return v
}

// cost is the CEL cost the validations and the variables they read spend on a pod.
func (p *celPolicy) cost(t testing.TB, pod *corev1.Pod, ns *corev1.Namespace) int64 {
	t.Helper()
	va := attributes(pod, "someone")
	req := plugincel.CreateAdmissionRequest(va.Attributes, metav1.GroupVersionResource(podsGVR), metav1.GroupVersionKind(va.VersionedKind))
	budget := int64(celconfig.RuntimeCELCostBudget)
	results, remaining, err := p.validations.ForInput(context.Background(), va, req, plugincel.OptionalVariableBindings{}, plugincel.CreateNamespaceObject(ns), budget)
	if err != nil {
		t.Fatalf("evaluating: %v", err)
	}
	for _, r := range results {
		if r.Error != nil {
			t.Fatalf("evaluating %q: %v", r.ExpressionAccessor.GetExpression(), r.Error)
		}
	}
	return budget - remaining
}
