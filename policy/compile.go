package policy

import (
	"fmt"
	"slices"
	"sort"
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
	Name      string
	Sandboxed bool
}

// RuleInfo describes one compiled rule, for tools that render the policy elsewhere
// (the fail-closed backstop, metrics, explain).
type RuleInfo struct {
	// Qualified is "<source>/<rule>".
	Qualified string
	Source    string
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

	rules []compiledRule
	index ruleIndex
	def   *compiledRule // from defaultRuntimeClass; nil when no policy sets one

	sources  []string
	warnings []string
}

type compiledRule struct {
	qualified string
	source    string
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

	// summary says why the rule matched, e.g. `namespace matches tenant-*`.
	summary string
	// setReason and keepReason[x] are rendered at compile time so the common decisions
	// cost no allocation.
	setReason  string
	keepReason []string
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
	s := &Snapshot{classIdx: map[string]int{}}
	s.mergeClasses(srcs)
	for _, src := range srcs {
		s.sources = append(s.sources, src.Name)
		for i := range src.Policy.Spec.Rules {
			rule := &src.Policy.Spec.Rules[i]
			s.warnings = append(s.warnings, imagePatternWarnings(src.Origin, src.Root.Child("spec", "rules").Index(i).Child("match"), &rule.Match)...)
			r, err := s.compileRule(src.Name, rule)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", src.Origin, err)
			}
			s.rules = append(s.rules, r)
		}
	}
	// Resolution order: priority, then the more isolated class, then the rule name.
	sort.SliceStable(s.rules, func(i, j int) bool {
		a, b := &s.rules[i], &s.rules[j]
		if a.priority != b.priority {
			return a.priority > b.priority
		}
		if a.class != b.class {
			return a.class < b.class
		}
		return a.qualified < b.qualified
	})
	all := make([]int32, len(s.rules))
	for i := range s.rules {
		all[i] = int32(i)
		s.rules[i].renderReasons(s)
	}
	s.index = buildIndex(s.rules, all)
	s.def = s.mergeDefault(srcs)
	return s, nil
}

// mergeClasses builds one isolation order from every source's runtimeClasses. Earlier
// sources (by name) win an ordering conflict for the merged order, and keepOK stays
// conservative: a pod keeps its own class only if every source that lists both classes
// ranks it at least as isolated.
func (s *Snapshot) mergeClasses(srcs []Source) {
	var order []string
	sandboxed := map[string]bool{}
	sandboxSaid := map[string]string{}
	for _, src := range srcs {
		list := src.Policy.Spec.RuntimeClasses
		pos := func(name string) int { return slices.Index(order, name) }
		for i, c := range list {
			if prev, ok := sandboxSaid[c.Name]; ok && (sandboxed[c.Name] != c.Sandboxed) {
				s.warnings = append(s.warnings, fmt.Sprintf("%s and %s disagree on whether %s is sandboxed; it is treated as sandboxed", prev, src.Name, c.Name))
			}
			if _, ok := sandboxSaid[c.Name]; !ok {
				sandboxSaid[c.Name] = src.Name
			}
			sandboxed[c.Name] = sandboxed[c.Name] || c.Sandboxed
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
		for i := range list {
			for j := i + 1; j < len(list); j++ {
				if pos(list[i].Name) > pos(list[j].Name) {
					s.warnings = append(s.warnings, fmt.Sprintf("%s ranks %s above %s, but an earlier policy ranks them the other way; the merged order keeps the earlier one and pods naming either class are held to both", src.Name, list[i].Name, list[j].Name))
				}
			}
		}
	}
	// Sandboxed classes always rank above the others.
	sort.SliceStable(order, func(i, j int) bool { return sandboxed[order[i]] && !sandboxed[order[j]] })
	for i, name := range order {
		s.classes = append(s.classes, ClassInfo{Name: name, Sandboxed: sandboxed[name]})
		s.classIdx[name] = i
	}
	n := len(order)
	s.keepOK = make([][]bool, n)
	for x := range n {
		s.keepOK[x] = make([]bool, n)
		for d := range n {
			s.keepOK[x][d] = x <= d
		}
	}
	for _, src := range srcs {
		idx := map[string]int{}
		for i, c := range src.Policy.Spec.RuntimeClasses {
			idx[c.Name] = i
		}
		for x, xn := range order {
			for d, dn := range order {
				ix, okx := idx[xn]
				id, okd := idx[dn]
				if okx && okd && ix > id {
					s.keepOK[x][d] = false
				}
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
	return c, nil
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
		if x == c.class {
			c.keepReason[x] = "the pod already names " + d + "; " + c.summary
		} else {
			c.keepReason[x] = "the pod names " + cl.Name + ", at least as isolated as " + d + "; " + c.summary
		}
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

// Rules lists the compiled rules in resolution order.
func (s *Snapshot) Rules() []RuleInfo {
	out := make([]RuleInfo, 0, len(s.rules))
	for i := range s.rules {
		r := &s.rules[i]
		ri := RuleInfo{Qualified: r.qualified, Source: r.source, Rule: r.spec, Sandboxed: s.classes[r.class].Sandboxed, Audit: r.audit}
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

// Len is the number of compiled rules, enforced and audited.
func (s *Snapshot) Len() int { return len(s.rules) }

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
