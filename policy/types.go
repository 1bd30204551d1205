package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The RuntimePolicy API identity.
const (
	APIVersion = "isolator.dev/v1alpha1"
	Kind       = "RuntimePolicy"
)

// ConfigMapKey is the ConfigMap data key that holds a RuntimePolicy.
const ConfigMapKey = "policy.yaml"

// PolicyLabel marks a ConfigMap in the isolator namespace as a policy source.
const PolicyLabel = "isolator.dev/policy"

// Mode says whether a rule changes pods or only records what it would have done.
type Mode string

// Rule modes.
const (
	ModeEnforce Mode = "Enforce"
	ModeAudit   Mode = "Audit"
)

// UserClassPolicy says what happens when a pod names a less isolated class than the
// rule decides.
type UserClassPolicy string

// Ways to treat a pod's own, less isolated class.
const (
	UserClassDeny    UserClassPolicy = "Deny"
	UserClassReplace UserClassPolicy = "Replace"
)

// RuntimePolicy is one team's policy document.
type RuntimePolicy struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   Metadata   `json:"metadata,omitempty"`
	Spec       PolicySpec `json:"spec"`
}

// Metadata names a bare policy file. A policy read from a ConfigMap takes the
// ConfigMap's name instead.
type Metadata struct {
	Name string `json:"name,omitempty"`
}

// PolicySpec is the body of a RuntimePolicy.
type PolicySpec struct {
	// RuntimeClasses lists the classes this policy knows, most isolated first.
	RuntimeClasses []RuntimeClass `json:"runtimeClasses"`
	// DefaultRuntimeClass is given to pods that no rule matches. Empty leaves them alone.
	DefaultRuntimeClass string `json:"defaultRuntimeClass,omitempty"`
	Rules               []Rule `json:"rules,omitempty"`
}

// RuntimeClass is a Kubernetes RuntimeClass as the policy sees it.
type RuntimeClass struct {
	Name string `json:"name"`
	// Sandboxed marks a VM sandbox: pods using hostNetwork, hostPID or hostIPC can't use it.
	Sandboxed bool `json:"sandboxed,omitempty"`
}

// Rule sends the pods it matches to a runtime class.
type Rule struct {
	Name             string          `json:"name"`
	RuntimeClass     string          `json:"runtimeClass"`
	Priority         int32           `json:"priority,omitempty"`
	Mode             Mode            `json:"mode,omitempty"`
	UserRuntimeClass UserClassPolicy `json:"userRuntimeClass,omitempty"`
	Match            Match           `json:"match"`
}

// Match holds a rule's conditions. Every field given must hold.
type Match struct {
	// Namespaces are globs on the namespace name; any may match.
	Namespaces        []string              `json:"namespaces,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	PodSelector       *metav1.LabelSelector `json:"podSelector,omitempty"`
	// AnyImage holds when some container's image matches one of the patterns.
	AnyImage []string `json:"anyImage,omitempty"`
	// AllImages holds when every container's image matches one of the patterns.
	AllImages []string `json:"allImages,omitempty"`
}

// EffectiveMode is the rule's mode with the default applied.
func (r *Rule) EffectiveMode() Mode {
	if r.Mode == "" {
		return ModeEnforce
	}
	return r.Mode
}

// EffectiveUserRuntimeClass is the rule's userRuntimeClass with the default applied.
func (r *Rule) EffectiveUserRuntimeClass() UserClassPolicy {
	if r.UserRuntimeClass == "" {
		return UserClassDeny
	}
	return r.UserRuntimeClass
}
