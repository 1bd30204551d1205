package backstop

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/backstop/internal/imageregex"
	"github.com/isolator-dev/isolator/policy"
)

// Names and labels of the generated objects.
const (
	// Name names the generated ValidatingAdmissionPolicy and its binding. It is fixed
	// so that RBAC can scope the webhook's rights to it with resourceNames.
	Name = "isolator-backstop"
	// NamePrefix marks every backstop object; the reconciler deletes stale ones.
	NamePrefix = "isolator-backstop"

	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "isolator"
	componentLabel = "app.kubernetes.io/component"
	partOfLabel    = "app.kubernetes.io/part-of"

	// SourcesAnnotation lists the policies the backstop was generated from.
	SourcesAnnotation = "isolator.dev/policy-sources"
	// RulesAnnotation counts the Enforce rules the backstop checks.
	RulesAnnotation = "isolator.dev/rules"

	// MirrorPodAnnotation marks the mirror of a kubelet's static pod.
	MirrorPodAnnotation = "kubernetes.io/config.mirror"
	// DefaultNamespace is isolator's own namespace.
	DefaultNamespace = "isolator-system"
)

// DefaultExcludedNamespaces are never checked, like the webhook's namespaceSelector:
// an outage of isolator must never block the cluster's own pods.
var DefaultExcludedNamespaces = []string{"kube-system", "kube-public", "kube-node-lease"}

// Limits the CEL is built for. The apiserver stops one expression at a cost of
// 1,000,000 (PerCallLimit) and one policy evaluation at 10,000,000
// (RuntimeCELCostBudget); the parser refuses expressions over 100,000 code points and
// deeply nested ones. The rules are therefore evaluated in chunks: each chunk is one
// variable, nested at most maxChunkRules deep and at most maxChunkChars long.
const (
	maxChunkRules = 32
	maxChunkChars = 60000
)

// Options shape the generated objects.
type Options struct {
	// Namespace is isolator's own namespace; it is never checked. Default
	// isolator-system.
	Namespace string
	// ExcludedNamespaces are never checked either. Default DefaultExcludedNamespaces.
	ExcludedNamespaces []string
}

func (o Options) excluded() []string {
	ns := o.Namespace
	if ns == "" {
		ns = DefaultNamespace
	}
	ex := o.ExcludedNamespaces
	if ex == nil {
		ex = DefaultExcludedNamespaces
	}
	out := append(slices.Clone(ex), ns)
	sort.Strings(out)
	return slices.Compact(out)
}

// Generate renders the backstop for the merged policy: one ValidatingAdmissionPolicy
// and its binding, or nothing when no Enforce rule and no default picks a sandboxed
// class. The CEL walks the Enforce rules in resolution order, exactly as
// Snapshot.Evaluate does, so a higher-priority rule that picks a non-sandboxed class
// still wins over a sandboxed one below it; the first matching rule (or the default)
// decides which classes the pod may carry.
func Generate(snap *policy.Snapshot, opts Options) ([]*admissionregistrationv1.ValidatingAdmissionPolicy, []*admissionregistrationv1.ValidatingAdmissionPolicyBinding, error) {
	if snap == nil {
		return nil, nil, nil
	}
	var vmClasses []string
	for _, c := range snap.Classes() {
		if c.VM() {
			vmClasses = append(vmClasses, c.Name)
		}
	}
	var rules []policy.RuleInfo
	teamRules := map[string][]policy.RuleInfo{}
	for _, r := range snap.Rules() {
		switch {
		case r.Audit:
		case r.Team != "":
			teamRules[r.Team] = append(teamRules[r.Team], r)
		default:
			rules = append(rules, r)
		}
	}
	required := map[string][]string{} // qualified rule -> decided class, then the others accepted
	defClass, defRule, hasDefault := snap.Default()
	rules, fallback := enforced(snap, rules, defClass, defRule, hasDefault, required)
	// Team policies: the pod must also satisfy what its namespace's team policy
	// requires. The webhook lets a team policy decide only where it is more isolated,
	// and the classes a decision accepts only grow as it gets less isolated, so
	// requiring both is requiring the stricter one.
	var team []policy.RuleInfo
	teamFallback := map[string]string{}
	for _, ns := range snap.TeamNamespaces() {
		class, rule, ok := snap.TeamDefault(ns)
		rs, fb := enforced(snap, teamRules[ns], class, rule, ok, required)
		team = append(team, rs...)
		if fb != "" {
			teamFallback[ns] = fb
		}
	}
	if len(rules) == 0 && fallback == "" && len(team) == 0 && len(teamFallback) == 0 {
		return nil, nil, nil
	}

	vars := []admissionregistrationv1.Variable{
		{Name: "nsLabels", Expression: `has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}`},
		{Name: "podLabels", Expression: `has(object.metadata.labels) ? object.metadata.labels : {}`},
		{Name: "images", Expression: imagesOf("object", true)},
		{Name: "rc", Expression: `has(object.spec.runtimeClassName) ? object.spec.runtimeClassName : ""`},
		{Name: "hostNamespaces", Expression: hostNamespacesExpr},
		{Name: "podName", Expression: podNameExpr},
	}
	if usesServiceAccounts(append(slices.Clone(rules), team...)) {
		vars = append(vars, admissionregistrationv1.Variable{Name: "serviceAccount", Expression: serviceAccountExpr})
	}
	chunks, pick, err := chain("rules", rules, celString(fallback))
	if err != nil {
		return nil, nil, err
	}
	vars = append(vars, chunks...)
	vars = append(vars, admissionregistrationv1.Variable{Name: "rule", Expression: pick})
	validations := []admissionregistrationv1.Validation{{
		Expression:        `size(variables.required) == 0 || variables.rc in variables.required`,
		MessageExpression: requiredMessage,
		Reason:            ptr(metav1.StatusReasonForbidden),
	}}
	if len(team) > 0 || len(teamFallback) > 0 {
		chunks, pick, err := chain("teamRules", team, teamFallbackExpr(teamFallback))
		if err != nil {
			return nil, nil, err
		}
		vars = append(vars, chunks...)
		vars = append(vars, admissionregistrationv1.Variable{Name: "teamRule", Expression: pick})
		validations = append(validations, admissionregistrationv1.Validation{
			Expression:        `size(variables.teamRequired) == 0 || variables.rc in variables.teamRequired`,
			MessageExpression: strings.NewReplacer("variables.required", "variables.teamRequired", "variables.rule", "variables.teamRule", "isolator rule", "isolator team rule").Replace(requiredMessage),
			Reason:            ptr(metav1.StatusReasonForbidden),
		})
	}
	vars = append(vars,
		// A variable is evaluated once per admission, so the map is built once.
		admissionregistrationv1.Variable{Name: "requiredByRule", Expression: requiredMap(required)},
		admissionregistrationv1.Variable{Name: "required", Expression: `variables.rule in variables.requiredByRule ? variables.requiredByRule[variables.rule] : []`},
	)
	if len(team) > 0 || len(teamFallback) > 0 {
		vars = append(vars, admissionregistrationv1.Variable{Name: "teamRequired", Expression: `variables.teamRule in variables.requiredByRule ? variables.requiredByRule[variables.teamRule] : []`})
	}
	validations = append(validations, admissionregistrationv1.Validation{
		Expression:        `!variables.hostNamespaces || !(variables.rc in ` + celList(vmClasses) + `)`,
		MessageExpression: hostNamespacesMessage,
		Reason:            ptr(metav1.StatusReasonForbidden),
	})
	nRules := len(rules) + len(team)

	vap := &admissionregistrationv1.ValidatingAdmissionPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicy"},
		ObjectMeta: objectMeta(snap, nRules),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			FailurePolicy: ptr(admissionregistrationv1.Fail),
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					// A running pod's images can change (kubectl set image, a patch); its
					// runtime class can't. An update that changes an image is checked as
					// a creation would be (the match condition below).
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
						},
					},
				}, {
					// kubectl debug adds an ephemeral container to a running pod with an
					// UPDATE of this subresource, which the mutating webhook never sees:
					// its image must not need a sandbox the pod lacks.
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods/ephemeralcontainers"},
						},
					},
				}},
			},
			MatchConditions: []admissionregistrationv1.MatchCondition{{
				// The kubelet's mirror pods stand for static pods that run whatever the
				// apiserver says. Only a node may skip the check this way: anyone else
				// adding the annotation is still checked.
				Name: "not-a-kubelet-mirror-pod",
				Expression: `!(has(object.metadata.annotations) && "` + MirrorPodAnnotation +
					`" in object.metadata.annotations && request.userInfo.username.startsWith("system:node:"))`,
			}, {
				// Other updates (labels, annotations, finalizers, ...) can't change which
				// class the pod needs by its images, and are left alone.
				Name:       ImageChangeCondition,
				Expression: imageChangeExpr,
			}},
			Variables:   vars,
			Validations: validations,
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		TypeMeta:   metav1.TypeMeta{APIVersion: admissionregistrationv1.SchemeGroupVersion.String(), Kind: "ValidatingAdmissionPolicyBinding"},
		ObjectMeta: objectMeta(snap, nRules),
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny},
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
					Key: corev1NamespaceNameLabel, Operator: metav1.LabelSelectorOpNotIn, Values: opts.excluded(),
				}}},
			},
		},
	}
	return []*admissionregistrationv1.ValidatingAdmissionPolicy{vap}, []*admissionregistrationv1.ValidatingAdmissionPolicyBinding{binding}, nil
}

// enforced returns the Enforce rules that can change what the backstop requires, and
// the default rule's name when the default decides a sandboxed class, and records in
// required what each sandboxed rule (and that default) accepts. Past the last sandboxed
// rule, a match only ever picks a non-sandboxed class, as does falling through to a
// non-sandboxed default: those rules can't change what the backstop requires.
func enforced(snap *policy.Snapshot, rules []policy.RuleInfo, defClass, defRule string, hasDefault bool, required map[string][]string) ([]policy.RuleInfo, string) {
	defSandboxed := false
	if hasDefault {
		c, _ := snap.Class(defClass)
		defSandboxed = c.Sandboxed
	}
	if !defSandboxed {
		last := -1
		for i, r := range rules {
			if r.Sandboxed {
				last = i
			}
		}
		rules = rules[:last+1]
	}
	for _, r := range rules {
		if r.Sandboxed {
			required[r.Qualified] = acceptedList(snap, r.Rule.RuntimeClass)
		}
	}
	if !defSandboxed {
		return rules, ""
	}
	required[defRule] = acceptedList(snap, defClass)
	return rules, defRule
}

// chain renders rules in resolution order as variables <prefix>0, <prefix>1, ...
// (chunks of chained conditionals), and the expression that picks the first match of
// them all, or fallback.
func chain(prefix string, rules []policy.RuleInfo, fallback string) ([]admissionregistrationv1.Variable, string, error) {
	chunks, err := chunkRules(rules)
	if err != nil {
		return nil, "", err
	}
	var vars []admissionregistrationv1.Variable
	var pick strings.Builder
	for i, c := range chunks {
		name := fmt.Sprintf("%s%d", prefix, i)
		vars = append(vars, admissionregistrationv1.Variable{Name: name, Expression: c})
		fmt.Fprintf(&pick, "variables.%s != \"\" ? variables.%s : ", name, name)
	}
	pick.WriteString(fallback)
	return vars, pick.String(), nil
}

// teamFallbackExpr picks the team default of the request's namespace, when it decides
// a sandboxed class.
func teamFallbackExpr(byNamespace map[string]string) string {
	namespaces := make([]string, 0, len(byNamespace))
	for ns := range byNamespace {
		namespaces = append(namespaces, ns)
	}
	sort.Strings(namespaces)
	var b strings.Builder
	for _, ns := range namespaces {
		b.WriteString("request.namespace == " + celString(ns) + " ? " + celString(byNamespace[ns]) + " : ")
	}
	b.WriteString(`""`)
	return b.String()
}

func usesServiceAccounts(rules []policy.RuleInfo) bool {
	for _, r := range rules {
		for _, x := range r.Rule.Exclude {
			if len(x.ServiceAccountNames) > 0 {
				return true
			}
		}
	}
	return false
}

// serviceAccountExpr is the pod's service account; the apiserver sets "default" before
// admission, and a pod without one is treated the same.
const serviceAccountExpr = `has(object.spec.serviceAccountName) && object.spec.serviceAccountName != "" ? object.spec.serviceAccountName : "default"`

// corev1NamespaceNameLabel is set by the apiserver on every namespace to its name.
const corev1NamespaceNameLabel = "kubernetes.io/metadata.name"

func ptr[T any](v T) *T { return &v }

func objectMeta(snap *policy.Snapshot, rules int) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: Name,
		Labels: map[string]string{
			ManagedByLabel: ManagedByValue,
			componentLabel: "backstop",
			partOfLabel:    "isolator",
		},
		Annotations: map[string]string{
			SourcesAnnotation: strings.Join(snap.Sources(), ","),
			RulesAnnotation:   strconv.Itoa(rules),
		},
	}
}

// acceptedList is the decided class first, then the other classes a pod may name.
func acceptedList(snap *policy.Snapshot, class string) []string {
	out := []string{class}
	for _, c := range snap.Accepted(class) {
		if c != class {
			out = append(out, c)
		}
	}
	return out
}

// ImageChangeCondition names the match condition that lets through creations, the
// ephemeral containers subresource, and only those updates that change an image.
const ImageChangeCondition = "create-or-image-change"

// ImageChangeExpression holds for every request but an update of a pod that leaves
// the images of its containers and init containers as they were. The webhook
// configuration's match condition of the same name is this expression, so that the
// webhook and the backstop see the same updates.
var ImageChangeExpression = `request.operation != "UPDATE" || ` + imagesOf("object", false) + ` != ` + imagesOf("oldObject", false)

// imageChangeExpr is ImageChangeExpression for the backstop, which also checks the
// ephemeral containers subresource.
var imageChangeExpr = `(has(request.subResource) && request.subResource != "") || ` + ImageChangeExpression

// imagesOf lists the images of obj's containers and init containers, and with
// ephemeral, of its ephemeral containers.
func imagesOf(obj string, ephemeral bool) string {
	list := func(field string) string {
		return `(has(` + obj + `.spec.` + field + `) ? ` + obj + `.spec.` + field + `.map(c, has(c.image) ? c.image : "") : [])`
	}
	s := obj + `.spec.containers.map(c, has(c.image) ? c.image : "") + ` + list("initContainers")
	if ephemeral {
		s += " + " + list("ephemeralContainers")
	}
	return s
}

// Denial messages: one line each, naming the pod, the rule and the fix.
const (
	requiredMessage = `"pod " + variables.podName + " in namespace " + request.namespace + ` +
		`" must run in runtime class " + variables.required[0] + " (isolator rule " + variables.rule + ")" + ` +
		`(request.operation == "UPDATE" ? ", but it runs in " + (variables.rc == "" ? "the default runtime" : variables.rc) + ` +
		`" and a running pod's runtimeClassName can't change; this change of its images needs a new pod: change the workload's pod template, or delete and recreate the pod" : ` +
		`(variables.rc == "" ? ", but it names none: the isolator webhook, which sets it, did not handle the pod" : ", but it names " + variables.rc) + ` +
		`"; set spec.runtimeClassName to one of: " + variables.required.join(", "))`
	hostNamespacesMessage = `"pod " + variables.podName + " in namespace " + request.namespace + ` +
		`" uses hostNetwork, hostPID or hostIPC, but runtime class " + variables.rc + ` +
		`" is a sandboxed (VM) class that cannot share the host's namespaces; ` +
		`remove them, or run the pod where the policy does not require a sandbox"`
)

const hostNamespacesExpr = `(has(object.spec.hostNetwork) && object.spec.hostNetwork) || ` +
	`(has(object.spec.hostPID) && object.spec.hostPID) || (has(object.spec.hostIPC) && object.spec.hostIPC)`

const podNameExpr = `has(object.metadata.name) && object.metadata.name != "" ? object.metadata.name : ` +
	`(has(object.metadata.generateName) ? object.metadata.generateName + "*" : "(unnamed)")`

// requiredMap maps each sandboxed rule to the classes a pod it decides may carry.
func requiredMap(required map[string][]string) string {
	keys := make([]string, 0, len(required))
	for k := range required {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(celString(k) + ": " + celList(required[k]))
	}
	b.WriteString("}")
	return b.String()
}

// chunkRules renders the rules in resolution order as chained conditionals, each
// chunk evaluating to the qualified name of its first matching rule or "".
func chunkRules(rules []policy.RuleInfo) ([]string, error) {
	var chunks []string
	var cur []string
	size := 0
	flush := func() {
		if len(cur) == 0 {
			return
		}
		chunks = append(chunks, strings.Join(cur, "")+`""`)
		cur, size = nil, 0
	}
	for _, r := range rules {
		m, err := matchExpr(r)
		if err != nil {
			return nil, fmt.Errorf("rule %s: %w", r.Qualified, err)
		}
		part := "(" + m + ") ? " + celString(r.Qualified) + " : "
		if len(part) > maxChunkChars {
			return nil, fmt.Errorf("rule %s renders to %d characters of CEL, more than the %d one expression may hold; split its patterns over several rules", r.Qualified, len(part), maxChunkChars)
		}
		if len(cur) == maxChunkRules || size+len(part) > maxChunkChars {
			flush()
		}
		cur = append(cur, part)
		size += len(part)
	}
	flush()
	return chunks, nil
}

// matchExpr renders one rule's match as CEL: every condition given must hold, cheapest
// first so that CEL's short-circuit skips the image regexes for most pods.
func matchExpr(r policy.RuleInfo) (string, error) {
	m := r.Rule.Match
	var conds []string
	if r.Team != "" {
		// A team rule applies in its own namespace only.
		conds = append(conds, "request.namespace == "+celString(r.Team))
	}
	where, err := placeExprs(m.Namespaces, m.NamespaceSelector, m.PodSelector)
	if err != nil {
		return "", err
	}
	conds = append(conds, where...)
	for _, images := range []struct {
		patterns []string
		all      bool
	}{{m.AnyImage, false}, {m.AllImages, true}} {
		if len(images.patterns) == 0 {
			continue
		}
		c, err := imagesMatchExpr(images.patterns, images.all)
		if err != nil {
			return "", err
		}
		conds = append(conds, c)
	}
	for _, x := range r.Rule.Exclude {
		c, err := exclusionExpr(x)
		if err != nil {
			return "", err
		}
		conds = append(conds, "!("+c+")")
	}
	if len(conds) == 0 {
		return "true", nil
	}
	return strings.Join(conds, " && "), nil
}

// placeExprs renders the conditions a rule and an exception share: namespace globs,
// namespace labels and pod labels, each only when given.
func placeExprs(namespaces []string, nsSel, podSel *metav1.LabelSelector) ([]string, error) {
	var conds []string
	if len(namespaces) > 0 {
		c, err := namespacesExpr(namespaces)
		if err != nil {
			return nil, err
		}
		conds = append(conds, c)
	}
	if nsSel != nil {
		conds = append(conds, selectorExpr("variables.nsLabels", nsSel)...)
	}
	if podSel != nil {
		conds = append(conds, selectorExpr("variables.podLabels", podSel)...)
	}
	return conds, nil
}

// exclusionExpr renders an exception: every field given holds.
func exclusionExpr(x policy.Exclusion) (string, error) {
	conds, err := placeExprs(x.Namespaces, x.NamespaceSelector, x.PodSelector)
	if err != nil {
		return "", err
	}
	if len(x.ServiceAccountNames) > 0 {
		conds = append(conds, "variables.serviceAccount in "+celList(x.ServiceAccountNames))
	}
	return strings.Join(conds, " && "), nil
}

// imagesMatchExpr renders anyImage (all false) or allImages (all true) as CEL over the
// pod's image names. allImages needs at least one image, as in the policy engine.
func imagesMatchExpr(patterns []string, all bool) (string, error) {
	re, ok, err := imagesRegex(patterns)
	switch {
	case err != nil:
		return "", err
	case !ok:
		return "false", nil
	case re == "":
		return "size(variables.images) > 0", nil
	case all:
		return "size(variables.images) > 0 && variables.images.all(i, i.matches(" + celRegex(re) + "))", nil
	default:
		return "variables.images.exists(i, i.matches(" + celRegex(re) + "))", nil
	}
}

// imagesRegex joins the patterns' regexes into one. re is "" when some pattern matches
// every image; ok is false when none can match any.
func imagesRegex(patterns []string) (re string, ok bool, err error) {
	var alts []string
	for _, s := range patterns {
		p, err := policy.ParseImagePattern(s)
		if err != nil {
			return "", false, fmt.Errorf("image pattern %q: %w", s, err)
		}
		if imageregex.MatchesEveryName(p.Segments) && p.Tag == "" && p.Digest == "" {
			return "", true, nil
		}
		r, ok, err := imageregex.Image(p)
		if err != nil {
			return "", false, fmt.Errorf("image pattern %q: %w", s, err)
		}
		if ok {
			alts = append(alts, strings.TrimSuffix(strings.TrimPrefix(r, "^"), "$"))
		}
	}
	joined, ok := imageregex.Join(alts)
	if !ok {
		return "", false, nil
	}
	return "^" + joined + "$", true, nil
}

func isLiteral(glob string) bool { return !strings.ContainsAny(glob, `*?[\`) }

func namespacesExpr(globs []string) (string, error) {
	var lits, pats []string
	for _, g := range globs {
		if isLiteral(g) {
			lits = append(lits, g)
		} else {
			pats = append(pats, g)
		}
	}
	var alts []string
	switch len(lits) {
	case 0:
	case 1:
		alts = append(alts, "request.namespace == "+celString(lits[0]))
	default:
		alts = append(alts, "request.namespace in "+celList(lits))
	}
	if len(pats) > 0 {
		re, ok, err := imageregex.Namespace(pats)
		if err != nil {
			return "", err
		}
		if ok {
			alts = append(alts, "request.namespace.matches("+celRegex(re)+")")
		}
	}
	switch len(alts) {
	case 0:
		return "false", nil
	case 1:
		return alts[0], nil
	}
	return "(" + strings.Join(alts, " || ") + ")", nil
}

// selectorExpr renders a label selector over the label map expression m, with
// labels.Selector semantics: NotIn and DoesNotExist hold when the key is absent.
func selectorExpr(m string, sel *metav1.LabelSelector) []string {
	var conds []string
	keys := make([]string, 0, len(sel.MatchLabels))
	for k := range sel.MatchLabels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		q := celString(k)
		conds = append(conds, fmt.Sprintf("(%s in %s && %s[%s] == %s)", q, m, m, q, celString(sel.MatchLabels[k])))
	}
	for _, e := range sel.MatchExpressions {
		q := celString(e.Key)
		switch e.Operator {
		case metav1.LabelSelectorOpIn:
			conds = append(conds, fmt.Sprintf("(%s in %s && %s[%s] in %s)", q, m, m, q, celList(e.Values)))
		case metav1.LabelSelectorOpNotIn:
			conds = append(conds, fmt.Sprintf("(!(%s in %s) || !(%s[%s] in %s))", q, m, m, q, celList(e.Values)))
		case metav1.LabelSelectorOpExists:
			conds = append(conds, fmt.Sprintf("%s in %s", q, m))
		case metav1.LabelSelectorOpDoesNotExist:
			conds = append(conds, fmt.Sprintf("!(%s in %s)", q, m))
		}
	}
	if len(conds) == 0 {
		conds = append(conds, "true") // the empty selector matches every label set
	}
	return conds
}

// celString quotes s as a CEL string literal. Go's escapes are a subset of CEL's.
func celString(s string) string { return strconv.Quote(s) }

// celRegex quotes a regex as a CEL raw string, which keeps its backslashes readable.
func celRegex(re string) string {
	if !strings.ContainsAny(re, "\"\n\r") {
		return `r"` + re + `"`
	}
	return celString(re)
}

func celList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = celString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
