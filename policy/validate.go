package policy

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxRules bounds the rules of one policy, so a runaway generator can't make every
// admission slow.
const MaxRules = 20000

// Validate checks a parsed policy and returns every problem with its field path, rooted
// at root (nil for a bare policy, data[policy.yaml] for a ConfigMap).
func Validate(p *RuntimePolicy, root *field.Path) field.ErrorList {
	var errs field.ErrorList
	if p == nil {
		return field.ErrorList{field.Required(pathOrNil(root, documentPath), "a RuntimePolicy document (apiVersion: "+APIVersion+", kind: "+Kind+")")}
	}
	v2 := p.APIVersion == APIVersionV1Alpha2
	if p.APIVersion != APIVersion && !v2 {
		errs = append(errs, field.NotSupported(root.Child("apiVersion"), p.APIVersion, APIVersions))
	}
	if p.Kind != Kind {
		errs = append(errs, field.NotSupported(root.Child("kind"), p.Kind, []string{Kind}))
	}
	if p.Metadata.Name != "" {
		for _, msg := range validation.IsDNS1123Label(p.Metadata.Name) {
			errs = append(errs, field.Invalid(root.Child("metadata", "name"), p.Metadata.Name, msg))
		}
	}
	spec := root.Child("spec")
	classes, cerrs := validateClasses(p.Spec.RuntimeClasses, spec.Child("runtimeClasses"), v2)
	errs = append(errs, cerrs...)
	switch u := p.Spec.UnknownRuntimeClasses; {
	case u == "":
	case !v2:
		errs = append(errs, needsV2(spec.Child("unknownRuntimeClasses")))
	case u != UnknownAsContainer && u != UnknownDeny:
		errs = append(errs, field.NotSupported(spec.Child("unknownRuntimeClasses"), u, []UnknownClassPolicy{UnknownAsContainer, UnknownDeny}))
	}
	if d := p.Spec.DefaultRuntimeClass; d != "" {
		if _, ok := classes[d]; !ok {
			e := field.NotFound(spec.Child("defaultRuntimeClass"), d)
			e.Detail = "not listed in spec.runtimeClasses; add it there or name a listed class"
			errs = append(errs, e)
		}
	}
	rulesPath := spec.Child("rules")
	if len(p.Spec.Rules) > MaxRules {
		errs = append(errs, field.TooMany(rulesPath, len(p.Spec.Rules), MaxRules))
	}
	seen := map[string]int{}
	for i := range p.Spec.Rules {
		rp := rulesPath.Index(i)
		r := &p.Spec.Rules[i]
		errs = append(errs, validateRule(r, rp, classes, v2)...)
		if r.Name != "" {
			if j, dup := seen[r.Name]; dup {
				e := field.Duplicate(rp.Child("name"), r.Name)
				e.Detail = fmt.Sprintf("spec.rules[%d] has the same name; rule names must be unique in a policy", j)
				errs = append(errs, e)
			} else {
				seen[r.Name] = i
			}
		}
	}
	return errs
}

// needsV2 reports a v1alpha2 field in a v1alpha1 policy.
func needsV2(p *field.Path) *field.Error {
	return field.Forbidden(p, "this field is new in "+APIVersionV1Alpha2+"; set apiVersion: "+APIVersionV1Alpha2+" (docs/policy.md, Versions)")
}

func validateClasses(list []RuntimeClass, path *field.Path, v2 bool) (map[string]int, field.ErrorList) {
	var errs field.ErrorList
	classes := map[string]int{}
	if len(list) == 0 {
		errs = append(errs, field.Required(path, "list the runtime classes the rules use, most isolated first, e.g. [{name: kata-rc, sandboxed: true}, {name: runc-rc}]"))
	}
	lastUnsandboxed := -1
	for i, c := range list {
		cp := path.Index(i).Child("name")
		if c.Name == "" {
			errs = append(errs, field.Required(cp, "the name of a Kubernetes RuntimeClass"))
			continue
		}
		for _, msg := range validation.IsDNS1123Subdomain(c.Name) {
			errs = append(errs, field.Invalid(cp, c.Name, msg))
		}
		if j, dup := classes[c.Name]; dup {
			e := field.Duplicate(cp, c.Name)
			e.Detail = fmt.Sprintf("already listed at index %d", j)
			errs = append(errs, e)
			continue
		}
		classes[c.Name] = i
		ip := path.Index(i).Child("isolation")
		switch {
		case c.Isolation == "":
		case !v2:
			errs = append(errs, needsV2(ip))
			continue
		case c.Isolation.rank() == 0:
			errs = append(errs, field.NotSupported(ip, c.Isolation, []Isolation{IsolationVM, IsolationKernel, IsolationContainer}))
			continue
		case c.Sandboxed && c.Isolation != IsolationVM:
			errs = append(errs, field.Invalid(ip, c.Isolation, "sandboxed: true means isolation VM; give one of the two"))
			continue
		}
		if v2 {
			continue // tiers, not the order, rank v1alpha2 classes
		}
		if !c.Sandboxed {
			if lastUnsandboxed < 0 {
				lastUnsandboxed = i
			}
		} else if lastUnsandboxed >= 0 {
			errs = append(errs, field.Invalid(path.Index(i).Child("sandboxed"), true,
				fmt.Sprintf("sandboxed class %q is listed after the non-sandboxed %q; list the most isolated classes first", c.Name, list[lastUnsandboxed].Name)))
		}
	}
	return classes, errs
}

func validateRule(r *Rule, rp *field.Path, classes map[string]int, v2 bool) field.ErrorList {
	var errs field.ErrorList
	if r.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), "a DNS-1123 label such as untrusted-namespaces"))
	} else {
		for _, msg := range validation.IsDNS1123Label(r.Name) {
			errs = append(errs, field.Invalid(rp.Child("name"), r.Name, msg))
		}
	}
	if r.RuntimeClass == "" {
		errs = append(errs, field.Required(rp.Child("runtimeClass"), "the class this rule gives the pods it matches"))
	} else if _, ok := classes[r.RuntimeClass]; !ok {
		e := field.NotFound(rp.Child("runtimeClass"), r.RuntimeClass)
		e.Detail = "not listed in spec.runtimeClasses; add it there or name a listed class"
		errs = append(errs, e)
	}
	switch r.Mode {
	case "", ModeEnforce, ModeAudit:
	default:
		errs = append(errs, field.NotSupported(rp.Child("mode"), r.Mode, []Mode{ModeEnforce, ModeAudit}))
	}
	switch r.UserRuntimeClass {
	case "", UserClassDeny, UserClassReplace:
	default:
		errs = append(errs, field.NotSupported(rp.Child("userRuntimeClass"), r.UserRuntimeClass, []UserClassPolicy{UserClassDeny, UserClassReplace}))
	}
	errs = append(errs, validateMatch(&r.Match, rp.Child("match"))...)
	if len(r.Exclude) > 0 && !v2 {
		return append(errs, needsV2(rp.Child("exclude")))
	}
	for i := range r.Exclude {
		errs = append(errs, validateExclusion(&r.Exclude[i], rp.Child("exclude").Index(i))...)
	}
	return errs
}

func validateExclusion(x *Exclusion, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(x.Namespaces) == 0 && x.NamespaceSelector == nil && x.PodSelector == nil && len(x.ServiceAccountNames) == 0 {
		errs = append(errs, field.Required(p, "at least one of namespaces, namespaceSelector, podSelector or serviceAccountNames"))
	}
	errs = append(errs, validateNamespaceGlobs(x.Namespaces, p.Child("namespaces"))...)
	errs = append(errs, validateSelector(x.NamespaceSelector, p.Child("namespaceSelector"))...)
	errs = append(errs, validateSelector(x.PodSelector, p.Child("podSelector"))...)
	for i, sa := range x.ServiceAccountNames {
		for _, msg := range validation.IsDNS1123Subdomain(sa) {
			errs = append(errs, field.Invalid(p.Child("serviceAccountNames").Index(i), sa, msg))
		}
	}
	return errs
}

func validateNamespaceGlobs(globs []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for i, ns := range globs {
		p := p.Index(i)
		if ns == "" {
			errs = append(errs, field.Required(p, "a namespace name or glob such as tenant-*"))
			continue
		}
		if err := validGlob(ns); err != nil {
			errs = append(errs, field.Invalid(p, ns, err.Error()))
		} else if isLiteral(ns) {
			for _, msg := range validation.IsDNS1123Label(ns) {
				errs = append(errs, field.Invalid(p, ns, msg))
			}
		}
	}
	return errs
}

func validateMatch(m *Match, mp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(m.Namespaces) == 0 && m.NamespaceSelector == nil && m.PodSelector == nil && len(m.AnyImage) == 0 && len(m.AllImages) == 0 {
		errs = append(errs, field.Required(mp, "at least one of namespaces, namespaceSelector, podSelector, anyImage or allImages"))
	}
	errs = append(errs, validateNamespaceGlobs(m.Namespaces, mp.Child("namespaces"))...)
	errs = append(errs, validateSelector(m.NamespaceSelector, mp.Child("namespaceSelector"))...)
	errs = append(errs, validateSelector(m.PodSelector, mp.Child("podSelector"))...)
	for _, list := range []struct {
		name     string
		patterns []string
	}{{"anyImage", m.AnyImage}, {"allImages", m.AllImages}} {
		for i, pat := range list.patterns {
			if _, err := compileImagePattern(pat); err != nil {
				errs = append(errs, field.Invalid(mp.Child(list.name).Index(i), pat, err.Error()))
			}
		}
	}
	return errs
}

func validateSelector(s *metav1.LabelSelector, p *field.Path) field.ErrorList {
	if s == nil {
		return nil
	}
	errs := metav1validation.ValidateLabelSelector(s, metav1validation.LabelSelectorValidationOptions{}, p)
	if len(errs) == 0 {
		if _, err := metav1.LabelSelectorAsSelector(s); err != nil {
			errs = append(errs, field.Invalid(p, s, err.Error()))
		}
	}
	return errs
}
