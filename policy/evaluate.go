package policy

import (
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// Action is what a decision does to the pod.
type Action string

// Decision actions.
const (
	ActionSet     Action = "set"     // the pod names no class; set the decided one
	ActionKeep    Action = "keep"    // the pod names a class at least as isolated; keep it
	ActionReplace Action = "replace" // the pod names a less isolated class; replace it
	ActionDeny    Action = "deny"    // refuse the pod; Reason says why and what would pass
	ActionNone    Action = "none"    // no rule and no default apply; leave the pod alone
)

// Facts are what a decision depends on. Images must already be normalised
// (NormalizeImage or Pod.Facts), so that Evaluate itself does no parsing.
type Facts struct {
	Namespace       string
	NamespaceLabels map[string]string
	PodLabels       map[string]string
	// Images holds every container's and initContainer's image.
	Images []Image
	// RuntimeClassName is the class the pod names itself; empty when it names none.
	RuntimeClassName string
	// ServiceAccountName is the pod's service account, "default" when it names none.
	ServiceAccountName string
	HostNetwork        bool
	HostPID            bool
	HostIPC            bool
}

// Outcome is the result of one rule for one pod.
type Outcome struct {
	// RuntimeClass is the class the pod ends up with (set, keep, replace), or the class
	// the policy requires (deny). Empty for none when the pod names no class.
	RuntimeClass string
	// Rule is "<source>/<rule>", or "<source>/defaultRuntimeClass"; empty for none.
	Rule   string
	Action Action
	Reason string
}

// Decision is what the policy does to one pod. Audit holds what the best matching
// Audit-mode rule would have done (Action empty when none matched); it never changes
// the decision itself.
type Decision struct {
	Outcome
	Audit Outcome
}

const noRuleReason = "no rule matched and no policy sets a defaultRuntimeClass"

// Evaluate decides the runtime class of one pod. It does not allocate on the common
// paths (set and keep) and takes no locks.
func (s *Snapshot) Evaluate(f *Facts) Decision {
	var d Decision
	if s == nil {
		d.Action, d.Reason, d.RuntimeClass = ActionNone, noRuleReason, f.RuntimeClassName
		return d
	}
	enforce, audit := s.index.best(s.rules, f)
	rule, auditRule := s.def, (*compiledRule)(nil)
	if enforce >= 0 {
		rule = &s.rules[enforce]
	}
	if audit >= 0 {
		auditRule = &s.rules[audit]
	}
	if len(s.teams) > 0 {
		if t := s.teams[f.Namespace]; t != nil {
			rule, auditRule = s.overTeam(t, f, rule, auditRule)
		}
	}
	if rule != nil {
		d.Outcome = s.decide(rule, f)
	} else {
		d.Action, d.Reason, d.RuntimeClass = ActionNone, noRuleReason, f.RuntimeClassName
	}
	if auditRule != nil {
		d.Audit = s.decide(auditRule, f)
	}
	return d
}

// overTeam lets the team policies of the pod's namespace decide where they decide a
// more isolated class than the cluster policies; they can never weaken a cluster
// decision. A team Audit rule is reported when no cluster one matched.
func (s *Snapshot) overTeam(t *teamPolicy, f *Facts, rule, auditRule *compiledRule) (*compiledRule, *compiledRule) {
	enforce, audit := t.index.best(t.rules, f)
	team := t.def
	if enforce >= 0 {
		team = &t.rules[enforce]
	}
	if team != nil && s.tighter(team.class, rule) {
		rule = team
	}
	if auditRule == nil && audit >= 0 {
		auditRule = &t.rules[audit]
	}
	return rule, auditRule
}

func (c *compiledRule) matches(f *Facts) bool {
	for i := range c.excludes {
		if c.excludes[i].holds(f) {
			return false
		}
	}
	if len(c.namespaces) > 0 && !c.matchNamespace(f.Namespace) {
		return false
	}
	if c.nsSel != nil && !c.nsSel.Matches(labels.Set(f.NamespaceLabels)) {
		return false
	}
	if c.podSel != nil && !c.podSel.Matches(labels.Set(f.PodLabels)) {
		return false
	}
	if len(c.anyImage) > 0 && !anyImageMatches(c.anyImage, f.Images) {
		return false
	}
	if len(c.allImages) > 0 && !allImagesMatch(c.allImages, f.Images) {
		return false
	}
	return true
}

// holds reports whether the exclusion applies to the pod: every field given holds.
func (x *exclusion) holds(f *Facts) bool {
	if len(x.namespaces) > 0 && !matchGlobs(x.namespaces, f.Namespace) {
		return false
	}
	if x.nsSel != nil && !x.nsSel.Matches(labels.Set(f.NamespaceLabels)) {
		return false
	}
	if x.podSel != nil && !x.podSel.Matches(labels.Set(f.PodLabels)) {
		return false
	}
	if len(x.accounts) > 0 && !slices.Contains(x.accounts, f.ServiceAccountName) {
		return false
	}
	return true
}

func matchGlobs(globs []glob, s string) bool {
	for i := range globs {
		if globs[i].match(s) {
			return true
		}
	}
	return false
}

func (c *compiledRule) matchNamespace(ns string) bool {
	for i := range c.namespaces {
		if c.namespaces[i].match(ns) {
			return true
		}
	}
	return false
}

func anyImageMatches(ps []imagePattern, imgs []Image) bool {
	for i := range imgs {
		for j := range ps {
			if ps[j].matches(&imgs[i]) {
				return true
			}
		}
	}
	return false
}

// allImagesMatch is false for a pod without images: an empty pod proves nothing.
func allImagesMatch(ps []imagePattern, imgs []Image) bool {
	if len(imgs) == 0 {
		return false
	}
	for i := range imgs {
		ok := false
		for j := range ps {
			if ps[j].matches(&imgs[i]) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// decide applies rule c to the pod: the pod's own class, then host namespaces.
func (s *Snapshot) decide(c *compiledRule, f *Facts) Outcome {
	o := Outcome{Rule: c.qualified, RuntimeClass: s.classes[c.class].Name}
	final := c.class
	switch own, known := s.classIdx[f.RuntimeClassName]; {
	case f.RuntimeClassName == "":
		o.Action, o.Reason = ActionSet, c.setReason
	case known && s.keepOK[own][c.class]:
		final = own
		o.Action, o.Reason, o.RuntimeClass = ActionKeep, c.keepReason[own], f.RuntimeClassName
	case !known && s.unknownKeep[c.class]:
		// A class no policy lists is never a VM class: host namespaces are its business.
		o.Action, o.Reason, o.RuntimeClass = ActionKeep, c.unknownKeepReason, f.RuntimeClassName
		return o
	case c.replace:
		o.Action = ActionReplace
		o.Reason = "the pod names " + s.describeOwn(f.RuntimeClassName, known, c.class) + "; replaced with " + o.RuntimeClass + " because " + c.summary
	default:
		o.Action = ActionDeny
		o.Reason = "the pod names " + s.describeOwn(f.RuntimeClassName, known, c.class) + ", but " + c.summary +
			", which requires " + o.RuntimeClass + "; remove runtimeClassName or name one of: " + strings.Join(s.accepted[c.class], ", ")
		return o
	}
	if s.classes[final].VM() && (f.HostNetwork || f.HostPID || f.HostIPC) {
		o = s.denyHostNamespaces(c, final, f)
	}
	return o
}

// denyHostNamespaces explains why a pod that shares host namespaces can't run in the
// sandboxed class final: because the policy requires it, or because the pod names it.
func (s *Snapshot) denyHostNamespaces(c *compiledRule, final int, f *Facts) Outcome {
	class := s.classes[final].Name
	host := hostNamespaces(f)
	o := Outcome{Rule: c.qualified, RuntimeClass: class, Action: ActionDeny}
	why := "the pod uses " + host + ", but " + class + " is a sandboxed (VM) runtime class that cannot share the host's namespaces; "
	if required := s.classes[c.class]; final == c.class || required.VM() {
		o.Reason = why + c.summary + ", so " + required.Name + " is required. Remove " + host + ", or run the pod where the policy does not require a sandbox"
		return o
	}
	// The pod asked for the sandbox itself; the policy would accept a less isolated class.
	o.Reason = why + "the pod names " + class + " itself (" + c.summary + ", which requires " + s.classes[c.class].Name +
		"). Remove " + host + ", or name " + s.classes[c.class].Name + " or remove runtimeClassName"
	return o
}

func (s *Snapshot) describeOwn(name string, known bool, decided int) string {
	switch {
	case known:
		return "runtime class " + name + ", which is less isolated"
	case s.unknownWhy[decided] != "":
		return "runtime class " + name + ", which no policy lists (" + s.unknownWhy[decided] + ")"
	}
	return "runtime class " + name + ", which no policy lists (unknown classes count as least isolated)"
}

func hostNamespaces(f *Facts) string {
	var parts []string
	if f.HostNetwork {
		parts = append(parts, "hostNetwork")
	}
	if f.HostPID {
		parts = append(parts, "hostPID")
	}
	if f.HostIPC {
		parts = append(parts, "hostIPC")
	}
	return strings.Join(parts, " and ")
}

// EvaluateUpdate decides an update of a running pod that changes its images. A running
// pod's runtimeClassName can't change, so the update can't be mutated: it is refused
// when the new images need a sandboxed class that the pod's class doesn't satisfy, and
// allowed otherwise (Action keep, or none when the pod names no class). As on
// creation, only sandboxed requirements are enforced this way; a pod whose new images
// would have given it another unsandboxed class keeps running where it is.
func (s *Snapshot) EvaluateUpdate(f *Facts) Decision {
	d := s.Evaluate(f)
	switch d.Action {
	case ActionSet, ActionReplace, ActionDeny:
		if c, ok := s.Class(d.RuntimeClass); ok && c.Sandboxed {
			runs := "the default runtime (no runtimeClassName)"
			if f.RuntimeClassName != "" {
				runs = "runtime class " + f.RuntimeClassName
			}
			d.Action = ActionDeny
			d.Reason = "the pod's new images need runtime class " + d.RuntimeClass + " (" + d.Reason + "), but the pod runs in " + runs +
				", and a running pod's runtimeClassName can't change: change the workload's pod template (or delete and recreate the pod) so that a new pod is admitted with them"
			return d
		}
	}
	d.Action, d.RuntimeClass = ActionKeep, f.RuntimeClassName
	if f.RuntimeClassName == "" {
		d.Action = ActionNone
	}
	d.Reason = "the update leaves the pod in a class the policy accepts for its new images: " + d.Reason
	return d
}
