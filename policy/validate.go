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
	if p.APIVersion != APIVersion {
		errs = append(errs, field.NotSupported(root.Child("apiVersion"), p.APIVersion, []string{APIVersion}))
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
	classes, cerrs := validateClasses(p.Spec.RuntimeClasses, spec.Child("runtimeClasses"))
	errs = append(errs, cerrs...)
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
		errs = append(errs, validateRule(r, rp, classes)...)
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

func validateClasses(list []RuntimeClass, path *field.Path) (map[string]int, field.ErrorList) {
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

func validateRule(r *Rule, rp *field.Path, classes map[string]int) field.ErrorList {
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
	return errs
}

func validateMatch(m *Match, mp *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(m.Namespaces) == 0 && m.NamespaceSelector == nil && m.PodSelector == nil && len(m.AnyImage) == 0 && len(m.AllImages) == 0 {
		errs = append(errs, field.Required(mp, "at least one of namespaces, namespaceSelector, podSelector, anyImage or allImages"))
	}
	for i, ns := range m.Namespaces {
		p := mp.Child("namespaces").Index(i)
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
