package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The RuntimePolicy API identity. v1alpha2 adds isolation tiers, the treatment of
// unknown classes and rule exclusions; v1alpha1 documents keep their meaning (docs/policy.md,
// "Versions").
const (
	APIVersion         = "isolator.dev/v1alpha1"
	APIVersionV1Alpha2 = "isolator.dev/v1alpha2"
	Kind               = "RuntimePolicy"
)

// APIVersions are the versions a RuntimePolicy may be written in.
var APIVersions = []string{APIVersion, APIVersionV1Alpha2}

// Isolation is how strongly a runtime class separates a pod from the node. Classes of
// one tier are equivalent: a pod that names any of them satisfies a decision for any
// other.
type Isolation string

// Isolation tiers, most isolated first.
const (
	// IsolationVM runs the pod in its own virtual machine and guest kernel (Kata
	// Containers, Firecracker). It can't share the host's network, PID or IPC namespace.
	IsolationVM Isolation = "VM"
	// IsolationKernel puts a user-space kernel between the pod and the host kernel
	// (gVisor).
	IsolationKernel Isolation = "Kernel"
	// IsolationContainer shares the host kernel (runc, crun, the NVIDIA runtime).
	IsolationContainer Isolation = "Container"
)

// rank orders the tiers: higher is more isolated.
func (i Isolation) rank() int {
	switch i {
	case IsolationVM:
		return 3
	case IsolationKernel:
		return 2
	case IsolationContainer:
		return 1
	}
	return 0
}

// UnknownClassPolicy says how a pod that names a class no policy lists is treated.
type UnknownClassPolicy string

// Ways to treat a class no policy lists.
const (
	// UnknownAsContainer counts it as a Container class: kept where no more is
	// required, denied (or replaced) where a VM or Kernel class is.
	UnknownAsContainer UnknownClassPolicy = "Container"
	// UnknownDeny counts it as least isolated: denied (or replaced) wherever a rule or
	// the default decides a class, as v1alpha1 does.
	UnknownDeny UnknownClassPolicy = "Deny"
)

// ConfigMapKey is the ConfigMap data key that holds a RuntimePolicy.
const ConfigMapKey = "policy.yaml"

// PolicyLabel marks a ConfigMap as a policy source: a cluster policy in the isolator
// namespace, or a team policy for the pods of its own namespace anywhere else.
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
	// RuntimeClasses lists the classes this policy knows. In v1alpha1 the list is
	// ordered, most isolated first; in v1alpha2 each class says its isolation, and the
	// order does not matter.
	RuntimeClasses []RuntimeClass `json:"runtimeClasses"`
	// UnknownRuntimeClasses says how a pod that names a class no policy lists is treated
	// (v1alpha2; default Container). v1alpha1 policies treat such classes as Deny does.
	UnknownRuntimeClasses UnknownClassPolicy `json:"unknownRuntimeClasses,omitempty"`
	// DefaultRuntimeClass is given to pods that no rule matches. Empty leaves them alone.
	DefaultRuntimeClass string `json:"defaultRuntimeClass,omitempty"`
	Rules               []Rule `json:"rules,omitempty"`
}

// RuntimeClass is a Kubernetes RuntimeClass as the policy sees it.
type RuntimeClass struct {
	Name string `json:"name"`
	// Isolation is the class's tier (v1alpha2): VM, Kernel or Container. Omitted, it
	// follows Sandboxed: VM when sandboxed, else Container.
	Isolation Isolation `json:"isolation,omitempty"`
	// Sandboxed marks a VM sandbox: pods using hostNetwork, hostPID or hostIPC can't use
	// it. In v1alpha2 it is shorthand for isolation: VM.
	Sandboxed bool `json:"sandboxed,omitempty"`
}

// EffectiveIsolation is the class's tier with the defaults applied.
func (c *RuntimeClass) EffectiveIsolation() Isolation {
	switch {
	case c.Isolation != "":
		return c.Isolation
	case c.Sandboxed:
		return IsolationVM
	}
	return IsolationContainer
}

// Rule sends the pods it matches to a runtime class.
type Rule struct {
	Name             string          `json:"name"`
	RuntimeClass     string          `json:"runtimeClass"`
	Priority         int32           `json:"priority,omitempty"`
	Mode             Mode            `json:"mode,omitempty"`
	UserRuntimeClass UserClassPolicy `json:"userRuntimeClass,omitempty"`
	Match            Match           `json:"match"`
	// Exclude lists exceptions (v1alpha2): the rule does not apply to a pod that any of
	// them holds for.
	Exclude []Exclusion `json:"exclude,omitempty"`
}

// Exclusion is one exception to a rule. Every field given must hold (AND), and at least
// one is given.
type Exclusion struct {
	// Namespaces are globs on the namespace name; any may match.
	Namespaces        []string              `json:"namespaces,omitempty"`
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// PodSelector selects pods by their labels, which their authors set: in a namespace
	// tenants control, it lets them exempt their own pods (validate warns).
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
	// ServiceAccountNames are the pod's service account (spec.serviceAccountName, which
	// defaults to "default"); any may match.
	ServiceAccountNames []string `json:"serviceAccountNames,omitempty"`
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
