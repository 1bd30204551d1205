package policy

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// DefaultRuleName is the rule part of the qualified name reported for decisions that
// come from a policy's defaultRuntimeClass. It can't clash with a rule: rule names are
// DNS-1123 labels, which have no upper-case letters.
const DefaultRuleName = "defaultRuntimeClass"

// ClassInfo is a runtime class in the merged policy.
type ClassInfo struct {
	Name string
	// Isolation is the class's tier; when policies disagree, the highest one given.
	Isolation Isolation
	// Sandboxed is true above the Container tier (VM or Kernel): the backstop enforces
	// decisions for such classes.
	Sandboxed bool
}

// VM reports whether the class runs pods in virtual machines, which can't share the
// host's network, PID or IPC namespace.
func (c ClassInfo) VM() bool { return c.Isolation == IsolationVM }

// RuleInfo describes one compiled rule, for tools that render the policy elsewhere
// (the fail-closed backstop, metrics, explain).
type RuleInfo struct {
	// Qualified is "<source>/<rule>"; for a team policy "<namespace>/<configmap>/<rule>".
	Qualified string
	Source    string
	// Team is the namespace of a team policy's rule, which applies to that namespace's
	// pods only; empty for cluster rules.
	Team      string
	Rule      Rule
	Sandboxed bool
	Audit     bool
	// ImagePatterns are the normalised anyImage and allImages patterns, as matched.
	AnyImage, AllImages []string
}

// Snapshot is an immutable, compiled and merged set of policies. It is safe for
// concurrent use; the webhook swaps whole snapshots atomically.
type Snapshot struct {
	classes  []ClassInfo
	classIdx map[string]int
	// keepOK[x][d] says a pod naming class x keeps it when class d is decided.
	keepOK   [][]bool
	accepted [][]string // accepted[d]: class names a pod may name when d is decided

	// unknownKeep[d] says a pod naming a class no policy lists keeps it when d is
	// decided; unknownWhy[d] explains a refusal.
	unknownKeep []bool
	unknownWhy  []string

	rules []compiledRule
	index ruleIndex
	def   *compiledRule // from defaultRuntimeClass; nil when no policy sets one

	// teams holds the team policies by namespace.
	teams map[string]*teamPolicy

	sources  []string
	warnings []string
}

// teamPolicy is the merged team policies of one namespace. They apply to its pods
// only, and only where they decide a more isolated class than the cluster policies.
type teamPolicy struct {
	rules []compiledRule
	index ruleIndex
	def   *compiledRule
}

type compiledRule struct {
	qualified string
	source    string
	team      string // a team policy's namespace
	spec      Rule
	class     int
	priority  int32
	audit     bool
	replace   bool

	namespaces []glob
	nsSel      labels.Selector
	podSel     labels.Selector
	anyImage   []imagePattern
	allImages  []imagePattern
	excludes   []exclusion

	// summary says why the rule matched, e.g. `namespace matches tenant-*`.
	summary string
	// setReason, keepReason[x] and unknownKeepReason are rendered at compile time so the
	// common decisions cost no allocation.
	setReason         string
	keepReason        []string
	unknownKeepReason string
}

// exclusion is a compiled Exclusion.
type exclusion struct {
	namespaces []glob
	nsSel      labels.Selector
	podSel     labels.Selector
	accounts   []string
}

// Compile validates, compiles and merges policies into a Snapshot. Sources are merged in
// name order, so the result does not depend on the order they are given in. A source
// that does not validate makes Compile fail with its errors; order disagreements between
// sources are resolved conservatively and reported by Warnings.
func Compile(sources ...Source) (*Snapshot, error) {
	srcs := slices.Clone(sources)
	sort.SliceStable(srcs, func(i, j int) bool { return srcs[i].Name < srcs[j].Name })
	var errs []string
	for i := range srcs {
		if i > 0 && srcs[i].Name == srcs[i-1].Name {
			errs = append(errs, fmt.Sprintf("%s and %s are both named %q; policy names qualify rule names and must be unique: give each policy its own metadata.name (a ConfigMap is named by metadata.name)", srcs[i-1].Origin, srcs[i].Origin, srcs[i].Name))
		}
		if srcs[i].Policy == nil {
			errs = append(errs, fmt.Sprintf("%s: no policy", srcs[i].Origin))
			continue
		}
		for _, e := range Validate(srcs[i].Policy, srcs[i].Root) {
			errs = append(errs, srcs[i].Origin+": "+e.Error())
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("invalid policy:\n  %s", strings.Join(errs, "\n  "))
	}
	var cluster, teams []Source
	for _, src := range srcs {
		if src.Team != "" {
			teams = append(teams, src)
		} else {
			cluster = append(cluster, src)
		}
	}
	s := &Snapshot{classIdx: map[string]int{}}
	s.mergeClasses(cluster)
	for i := range cluster {
		rules, err := s.compileSource(&cluster[i], "")
		if err != nil {
			return nil, err
		}
		s.rules = append(s.rules, rules...)
	}
	sortRules(s.rules)
	all := make([]int32, len(s.rules))
	for i := range s.rules {
		all[i] = int32(i)
		s.rules[i].renderReasons(s)
	}
	s.index = buildIndex(s.rules, all)
	s.def = s.mergeDefault(cluster)
	if err := s.compileTeams(teams); err != nil {
		return nil, err
	}
	return s, nil
}

// mergeClasses builds one isolation order from every source's runtimeClasses: the
// higher tier first and, within a tier, the order of the v1alpha1 lists. Earlier sources
// (by name) win an ordering conflict for the merged order, and keepOK stays
// conservative: a pod keeps its own class only if every source that lists both classes
// says it is at least as isolated (a v1alpha1 source by its order, a v1alpha2 source by
// the classes' tiers).
func (s *Snapshot) mergeClasses(srcs []Source) {
	var order []string
	tier := map[string]Isolation{}
	tierSaid := map[string]string{}
	tiered := map[string]bool{} // listed by a v1alpha2 source: equal tiers are equivalent
	for _, src := range srcs {
		list := src.Policy.Spec.RuntimeClasses
		v2 := src.Policy.APIVersion == APIVersionV1Alpha2
		pos := func(name string) int { return slices.Index(order, name) }
		for i, c := range list {
			iso := c.EffectiveIsolation()
			if prev, ok := tierSaid[c.Name]; ok && tier[c.Name] != iso {
				was := tier[c.Name]
				if iso.rank() > was.rank() {
					tier[c.Name] = iso
				}
				if !v2 && !tiered[c.Name] {
					// Two v1alpha1 policies: VM or Container, sandboxed or not.
					s.warnings = append(s.warnings, fmt.Sprintf("%s and %s disagree on whether %s is sandboxed; it is treated as sandboxed", prev, src.Name, c.Name))
				} else {
					s.warnings = append(s.warnings, fmt.Sprintf("%s and %s give %s different isolation (%s, %s); it is treated as %s, the higher", prev, src.Name, c.Name, was, iso, tier[c.Name]))
				}
			}
			if _, ok := tierSaid[c.Name]; !ok {
				tierSaid[c.Name], tier[c.Name] = src.Name, iso
			}
			tiered[c.Name] = tiered[c.Name] || v2
			if pos(c.Name) >= 0 {
				continue
			}
			at := len(order)
			for _, next := range list[i+1:] {
				if p := pos(next.Name); p >= 0 {
					at = p
					break
				}
			}
			order = slices.Insert(order, at, c.Name)
		}
		if v2 {
			continue
		}
		for i := range list {
			for j := i + 1; j < len(list); j++ {
				if pos(list[i].Name) > pos(list[j].Name) {
					s.warnings = append(s.warnings, fmt.Sprintf("%s ranks %s above %s, but an earlier policy ranks them the other way; the merged order keeps the earlier one and pods naming either class are held to both", src.Name, list[i].Name, list[j].Name))
				}
			}
		}
	}
	// Higher tiers always rank above lower ones.
	sort.SliceStable(order, func(i, j int) bool { return tier[order[i]].rank() > tier[order[j]].rank() })
	for i, name := range order {
		s.classes = append(s.classes, ClassInfo{Name: name, Isolation: tier[name], Sandboxed: tier[name].rank() > IsolationContainer.rank()})
		s.classIdx[name] = i
	}
	n := len(order)
	s.keepOK = make([][]bool, n)
	for x := range n {
		s.keepOK[x] = make([]bool, n)
		for d := range n {
			rx, rd := tier[order[x]].rank(), tier[order[d]].rank()
			s.keepOK[x][d] = rx > rd || (rx == rd && (x <= d || tiered[order[x]] && tiered[order[d]]))
		}
	}
	s.unknownKeep = make([]bool, n)
	s.unknownWhy = make([]string, n)
	for d := range n {
		s.unknownKeep[d] = true
	}
	for _, src := range srcs {
		idx := map[string]int{}
		v2 := src.Policy.APIVersion == APIVersionV1Alpha2
		for i, c := range src.Policy.Spec.RuntimeClasses {
			idx[c.Name] = i
		}
		at := func(name string) Isolation { return src.Policy.Spec.RuntimeClasses[idx[name]].EffectiveIsolation() }
		for x, xn := range order {
			for d, dn := range order {
				ix, okx := idx[xn]
				id, okd := idx[dn]
				if !okx || !okd {
					continue
				}
				if (!v2 && ix > id) || (v2 && at(xn).rank() < at(dn).rank()) {
					s.keepOK[x][d] = false
				}
			}
		}
		unknown := src.Policy.Spec.UnknownRuntimeClasses
		for d, dn := range order {
			if _, ok := idx[dn]; !ok || !s.unknownKeep[d] {
				continue
			}
			switch {
			case !v2:
				s.unknownKeep[d], s.unknownWhy[d] = false, ""
			case unknown == UnknownDeny:
				s.unknownKeep[d] = false
				s.unknownWhy[d] = "policy " + src.Name + " sets unknownRuntimeClasses: Deny"
			case at(dn).rank() > IsolationContainer.rank():
				s.unknownKeep[d] = false
				s.unknownWhy[d] = "unknown classes count as Container isolation, less than " + string(at(dn))
			}
		}
	}
	s.accepted = make([][]string, n)
	for d := range n {
		for x := range n {
			if s.keepOK[x][d] {
				s.accepted[d] = append(s.accepted[d], order[x])
			}
		}
	}
}

// mergeDefault picks the most isolated defaultRuntimeClass any source sets, so that a
// team can't weaken another's default.
func (s *Snapshot) mergeDefault(srcs []Source) *compiledRule {
	var best *compiledRule
	for _, src := range srcs {
		d := src.Policy.Spec.DefaultRuntimeClass
		if d == "" {
			continue
		}
		c := s.classIdx[d]
		if best != nil && best.class <= c {
			continue
		}
		best = &compiledRule{
			qualified: src.Name + "/" + DefaultRuleName,
			source:    src.Name,
			spec:      Rule{Name: DefaultRuleName, RuntimeClass: d},
			class:     c,
			summary:   "no rule matched, and policy " + src.Name + " sets defaultRuntimeClass " + d,
		}
	}
	if best != nil {
		best.renderReasons(s)
	}
	return best
}

func (s *Snapshot) compileRule(source string, r *Rule) (compiledRule, error) {
	c := compiledRule{
		qualified: source + "/" + r.Name,
		source:    source,
		spec:      *r,
		class:     s.classIdx[r.RuntimeClass],
		priority:  r.Priority,
		audit:     r.EffectiveMode() == ModeAudit,
		replace:   r.EffectiveUserRuntimeClass() == UserClassReplace,
	}
	m := &r.Match
	var why []string
	for _, ns := range m.Namespaces {
		c.namespaces = append(c.namespaces, newGlob(ns))
	}
	if len(m.Namespaces) == 1 {
		if isLiteral(m.Namespaces[0]) {
			why = append(why, "namespace is "+m.Namespaces[0])
		} else {
			why = append(why, "namespace matches "+m.Namespaces[0])
		}
	} else if len(m.Namespaces) > 1 {
		why = append(why, "namespace matches one of ["+strings.Join(m.Namespaces, ", ")+"]")
	}
	var err error
	if m.NamespaceSelector != nil {
		if c.nsSel, err = metav1.LabelSelectorAsSelector(m.NamespaceSelector); err != nil {
			return c, fmt.Errorf("rule %s: namespaceSelector: %w", r.Name, err)
		}
		why = append(why, "namespace labels match "+selectorText(c.nsSel))
	}
	if m.PodSelector != nil {
		if c.podSel, err = metav1.LabelSelectorAsSelector(m.PodSelector); err != nil {
			return c, fmt.Errorf("rule %s: podSelector: %w", r.Name, err)
		}
		why = append(why, "pod labels match "+selectorText(c.podSel))
	}
	for _, list := range []struct {
		in   []string
		out  *[]imagePattern
		word string
	}{{m.AnyImage, &c.anyImage, "an image"}, {m.AllImages, &c.allImages, "every image"}} {
		for _, p := range list.in {
			ip, err := compileImagePattern(p)
			if err != nil {
				return c, fmt.Errorf("rule %s: image pattern %q: %w", r.Name, p, err)
			}
			*list.out = append(*list.out, ip)
		}
		switch len(list.in) {
		case 0:
		case 1:
			why = append(why, list.word+" matches "+list.in[0])
		default:
			why = append(why, list.word+" matches one of ["+strings.Join(list.in, ", ")+"]")
		}
	}
	c.summary = strings.Join(why, " and ")
	for i := range r.Exclude {
		x := &r.Exclude[i]
		var cx exclusion
		for _, ns := range x.Namespaces {
			cx.namespaces = append(cx.namespaces, newGlob(ns))
		}
		if x.NamespaceSelector != nil {
			if cx.nsSel, err = metav1.LabelSelectorAsSelector(x.NamespaceSelector); err != nil {
				return c, fmt.Errorf("rule %s: exclude[%d].namespaceSelector: %w", r.Name, i, err)
			}
		}
		if x.PodSelector != nil {
			if cx.podSel, err = metav1.LabelSelectorAsSelector(x.PodSelector); err != nil {
				return c, fmt.Errorf("rule %s: exclude[%d].podSelector: %w", r.Name, i, err)
			}
		}
		cx.accounts = x.ServiceAccountNames
		c.excludes = append(c.excludes, cx)
	}
	return c, nil
}

// exclusionWarnings points out ways for pod authors to exempt their own pods from a
// rule: an exception by pod labels or by a service account name anyone can create, and
// a match that a pod leaves by setting or removing one of its own labels.
func exclusionWarnings(origin string, rp *field.Path, r *Rule) []string {
	var out []string
	if sel := r.Match.PodSelector; sel != nil {
		for k, e := range sel.MatchExpressions {
			if e.Operator == metav1.LabelSelectorOpNotIn || e.Operator == metav1.LabelSelectorOpDoesNotExist {
				at := origin + ": " + rp.Child("match", "podSelector", "matchExpressions").Index(k).String()
				out = append(out, at+": "+string(e.Operator)+" "+e.Key+": pod authors set their pods' labels, so any pod can leave rule "+r.Name+" by setting "+e.Key+"; exempt pods with exclude by namespaces, namespaceSelector or serviceAccountNames the platform controls")
			}
		}
	}
	for j, x := range r.Exclude {
		at := origin + ": " + rp.Child("exclude").Index(j).String()
		switch {
		case x.PodSelector != nil:
			out = append(out, at+": podSelector: pod authors set their pods' labels, so in a namespace tenants control they can exempt their own pods from rule "+r.Name+"; exclude by namespaces, namespaceSelector or serviceAccountNames the platform controls")
		case len(x.ServiceAccountNames) > 0 && len(x.Namespaces) == 0 && x.NamespaceSelector == nil:
			out = append(out, at+": serviceAccountNames without namespaces: anyone who may create a service account of that name in their namespace can exempt their pods from rule "+r.Name+"; name the namespaces too")
		}
	}
	return out
}

// imagePatternWarnings points out image patterns that are valid but likely not what
// their author meant.
func imagePatternWarnings(origin string, mp *field.Path, m *Match) []string {
	var out []string
	for _, list := range []struct {
		field    string
		patterns []string
	}{{"anyImage", m.AnyImage}, {"allImages", m.AllImages}} {
		for j, p := range list.patterns {
			at := origin + ": " + mp.Child(list.field).Index(j).String()
			host, _, _ := strings.Cut(p, "/")
			if strings.HasPrefix(host, "[") && strings.Contains(host, ":") && strings.Contains(p, "/") {
				escaped := `\[` + strings.Replace(host[1:], "]", `\]`, 1) + p[len(host):]
				out = append(out, fmt.Sprintf("%s: %q starts with a glob character class, not an IPv6 host; an IPv6 registry is matched only by its literal address with the brackets escaped: %q", at, p, escaped))
			}
			ip, err := compileImagePattern(p)
			if err != nil {
				continue // Validate reports it
			}
			switch {
			case ip.digest != "" && ip.tag != "":
				out = append(out, fmt.Sprintf("%s: %q gives a tag and a digest; only the digest is compared, since it decides what is pulled", at, p))
			case ip.tag != "" && list.field == "anyImage":
				out = append(out, fmt.Sprintf("%s: %q never matches a digest-pinned image (%s@sha256:...), whose digest, not its tag, decides what is pulled; a pod can pin a digest to pass this pattern by. Leave out the tag (%s) to match every reference to the repository", at, p, ip.String(), strings.TrimSuffix(p, ":"+ip.tag)))
			}
		}
	}
	return out
}

func selectorText(s labels.Selector) string {
	if s.Empty() {
		return "{} (every label set)"
	}
	return "{" + s.String() + "}"
}

func (c *compiledRule) renderReasons(s *Snapshot) {
	d := s.classes[c.class].Name
	c.setReason = c.summary
	c.keepReason = make([]string, len(s.classes))
	for x, cl := range s.classes {
		if !s.keepOK[x][c.class] {
			continue
		}
		switch {
		case x == c.class:
			c.keepReason[x] = "the pod already names " + d + "; " + c.summary
		case cl.Isolation == s.classes[c.class].Isolation && s.keepOK[c.class][x]:
			c.keepReason[x] = "the pod names " + cl.Name + ", as isolated as " + d + " (both " + string(cl.Isolation) + "); " + c.summary
		default:
			c.keepReason[x] = "the pod names " + cl.Name + ", at least as isolated as " + d + "; " + c.summary
		}
	}
	if s.unknownKeep[c.class] {
		c.unknownKeepReason = "the pod names a runtime class no policy lists, which counts as Container isolation, as much as " + d + " requires; " + c.summary
	}
}

// Classes returns the merged runtime classes, most isolated first.
func (s *Snapshot) Classes() []ClassInfo { return slices.Clone(s.classes) }

// Class looks up a class of the merged policy.
func (s *Snapshot) Class(name string) (ClassInfo, bool) {
	i, ok := s.classIdx[name]
	if !ok {
		return ClassInfo{}, false
	}
	return s.classes[i], true
}

// Accepted lists the classes a pod may name itself when class is decided: class and
// those every policy ranks at least as isolated.
func (s *Snapshot) Accepted(class string) []string {
	i, ok := s.classIdx[class]
	if !ok {
		return nil
	}
	return slices.Clone(s.accepted[i])
}

// Rules lists the compiled rules in resolution order: the cluster policies' rules, then
// each namespace's team rules (RuleInfo.Team), by namespace.
func (s *Snapshot) Rules() []RuleInfo {
	all := s.rules
	for _, ns := range s.TeamNamespaces() {
		all = append(slices.Clip(all), s.teams[ns].rules...)
	}
	out := make([]RuleInfo, 0, len(all))
	for i := range all {
		r := &all[i]
		ri := RuleInfo{Qualified: r.qualified, Source: r.source, Team: r.team, Rule: r.spec, Sandboxed: s.classes[r.class].Sandboxed, Audit: r.audit}
		for _, p := range r.anyImage {
			ri.AnyImage = append(ri.AnyImage, p.String())
		}
		for _, p := range r.allImages {
			ri.AllImages = append(ri.AllImages, p.String())
		}
		out = append(out, ri)
	}
	return out
}

// Default returns the merged defaultRuntimeClass and the qualified name reported for it.
func (s *Snapshot) Default() (class, rule string, ok bool) {
	if s.def == nil {
		return "", "", false
	}
	return s.classes[s.def.class].Name, s.def.qualified, true
}

// Sources lists the names of the merged policies, sorted.
func (s *Snapshot) Sources() []string { return slices.Clone(s.sources) }

// Len is the number of compiled rules, enforced and audited, team rules included.
func (s *Snapshot) Len() int {
	n := len(s.rules)
	for _, t := range s.teams {
		n += len(t.rules)
	}
	return n
}

// Warnings reports how disagreements between policies were resolved.
func (s *Snapshot) Warnings() []string { return slices.Clone(s.warnings) }

// Rooted returns errs with every path prefixed by root, for policies embedded in a
// ConfigMap.
func Rooted(root *field.Path, errs field.ErrorList) field.ErrorList {
	if root == nil {
		return errs
	}
	out := make(field.ErrorList, 0, len(errs))
	for _, e := range errs {
		c := *e
		c.Field = root.String() + "." + e.Field
		out = append(out, &c)
	}
	return out
}

// compileSource compiles the rules of one source, with the warnings its patterns and
// exceptions deserve; team is the namespace of a team policy, whose rules are also
// held against the cluster's.
func (s *Snapshot) compileSource(src *Source, team string) ([]compiledRule, error) {
	s.sources = append(s.sources, src.Name)
	var out []compiledRule
	for i := range src.Policy.Spec.Rules {
		rule := &src.Policy.Spec.Rules[i]
		rp := src.Root.Child("spec", "rules").Index(i)
		s.warnings = append(s.warnings, imagePatternWarnings(src.Origin, rp.Child("match"), &rule.Match)...)
		s.warnings = append(s.warnings, exclusionWarnings(src.Origin, rp, rule)...)
		r, err := s.compileRule(src.Name, rule)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.Origin, err)
		}
		r.team = team
		if team != "" && !r.audit {
			s.warnings = append(s.warnings, s.looserThanCluster(src.Origin+": spec.rules["+strconv.Itoa(i)+"] ("+rule.Name+")", &r, team)...)
		}
		out = append(out, r)
	}
	return out, nil
}

// CheckTeam reports what keeps a team policy from applying on top of the cluster
// policies of s. A team policy uses only classes the cluster policies list, with the
// isolation they give them; its rules apply to its own namespace, so they name no
// namespaces; and only cluster policies say how unknown classes are treated.
func (s *Snapshot) CheckTeam(src *Source) field.ErrorList {
	var errs field.ErrorList
	spec := src.Root.Child("spec")
	p := src.Policy
	if p.Spec.UnknownRuntimeClasses != "" {
		errs = append(errs, field.Forbidden(spec.Child("unknownRuntimeClasses"), "only the cluster policies (in isolator's namespace) say how unknown classes are treated"))
	}
	var known []string
	for _, c := range s.classes {
		known = append(known, c.Name)
	}
	for i, c := range p.Spec.RuntimeClasses {
		cp := spec.Child("runtimeClasses").Index(i)
		ci, ok := s.Class(c.Name)
		switch {
		case !ok:
			e := field.NotFound(cp.Child("name"), c.Name)
			e.Detail = "a team policy uses only the classes the cluster policies list (" + strings.Join(known, ", ") + "); ask the platform team to add it"
			errs = append(errs, e)
		case c.EffectiveIsolation() != ci.Isolation:
			errs = append(errs, field.Invalid(cp, c.EffectiveIsolation(), fmt.Sprintf("the cluster policies give %s isolation %s, and a team policy can't change it: write isolation: %s (or sandboxed: %v)", c.Name, ci.Isolation, ci.Isolation, ci.VM())))
		}
	}
	own := "a team policy applies to the pods of its own namespace (" + src.Team + ") only"
	for i := range p.Spec.Rules {
		r := &p.Spec.Rules[i]
		rp := spec.Child("rules").Index(i)
		if len(r.Match.Namespaces) > 0 {
			errs = append(errs, field.Forbidden(rp.Child("match", "namespaces"), own))
		}
		if r.Match.NamespaceSelector != nil {
			errs = append(errs, field.Forbidden(rp.Child("match", "namespaceSelector"), own))
		}
		for j := range r.Exclude {
			if len(r.Exclude[j].Namespaces) > 0 || r.Exclude[j].NamespaceSelector != nil {
				errs = append(errs, field.Forbidden(rp.Child("exclude").Index(j), own+"; exclude by podSelector or serviceAccountNames"))
			}
		}
	}
	return errs
}

// compileTeams compiles the team policies, by namespace. A team policy that does not
// fit the cluster policies (CheckTeam) is left out, with a warning: its namespace keeps
// the cluster policies' decisions, which a team policy could only have tightened.
func (s *Snapshot) compileTeams(srcs []Source) error {
	byNS := map[string][]Source{}
	for i := range srcs {
		src := &srcs[i]
		if errs := s.CheckTeam(src); len(errs) > 0 {
			s.warnings = append(s.warnings, fmt.Sprintf("%s: the team policy for namespace %s does not apply: %s", src.Origin, src.Team, errs.ToAggregate()))
			continue
		}
		byNS[src.Team] = append(byNS[src.Team], *src)
	}
	for ns, team := range byNS {
		t := &teamPolicy{}
		for i := range team {
			rules, err := s.compileSource(&team[i], ns)
			if err != nil {
				return err
			}
			t.rules = append(t.rules, rules...)
		}
		sortRules(t.rules)
		all := make([]int32, len(t.rules))
		for i := range t.rules {
			all[i] = int32(i)
			t.rules[i].renderReasons(s)
		}
		t.index = buildIndex(t.rules, all)
		if t.def = s.mergeDefault(team); t.def != nil {
			t.def.team = ns
			s.warnings = append(s.warnings, s.looserThanCluster("team policy "+t.def.source+": spec.defaultRuntimeClass", t.def, ns)...)
		}
		if s.teams == nil {
			s.teams = map[string]*teamPolicy{}
		}
		s.teams[ns] = t
	}
	sort.Strings(s.sources)
	return nil
}

// looserThanCluster warns about a team rule that would weaken cluster rules which may
// apply to the same pods of namespace ns: there the cluster decision stands. Cluster
// rules whose namespace globs exclude ns can't apply; the rest may, as far as a policy
// alone can tell.
func (s *Snapshot) looserThanCluster(at string, team *compiledRule, ns string) []string {
	var out []string
	tc := s.classes[team.class].Name
	for i := range s.rules {
		c := &s.rules[i]
		if c.audit || (len(c.namespaces) > 0 && !c.matchNamespace(ns)) || !s.tighter(c.class, team) {
			continue
		}
		out = append(out, fmt.Sprintf("%s decides %s, less isolated than cluster rule %s (%s), which may apply to the same pods of namespace %s: a team policy can't weaken it, and there the cluster decision stands", at, tc, c.qualified, s.classes[c.class].Name, ns))
	}
	if s.def != nil && s.tighter(s.def.class, team) {
		out = append(out, fmt.Sprintf("%s decides %s, less isolated than the cluster's %s (%s): a team policy can't weaken it, and there the cluster decision stands", at, tc, s.def.qualified, s.classes[s.def.class].Name))
	}
	return out
}

// sortRules puts rules in resolution order: priority, then the more isolated class,
// then the rule name.
func sortRules(rules []compiledRule) {
	sort.SliceStable(rules, func(i, j int) bool {
		a, b := &rules[i], &rules[j]
		if a.priority != b.priority {
			return a.priority > b.priority
		}
		if a.class != b.class {
			return a.class < b.class
		}
		return a.qualified < b.qualified
	})
}

// tighter reports whether class tc is more isolated than what rule decides: every
// policy ranks a pod in tc at least as isolated, and not the other way round. Any class
// is tighter than no decision at all.
func (s *Snapshot) tighter(tc int, rule *compiledRule) bool {
	if rule == nil {
		return true
	}
	return s.keepOK[tc][rule.class] && !s.keepOK[rule.class][tc]
}

// TeamNamespaces lists the namespaces whose team policies apply, sorted.
func (s *Snapshot) TeamNamespaces() []string {
	out := make([]string, 0, len(s.teams))
	for ns := range s.teams {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}

// TeamDefault returns the defaultRuntimeClass of namespace ns's team policies and the
// qualified name reported for it.
func (s *Snapshot) TeamDefault(ns string) (class, rule string, ok bool) {
	t := s.teams[ns]
	if t == nil || t.def == nil {
		return "", "", false
	}
	return s.classes[t.def.class].Name, t.def.qualified, true
}
