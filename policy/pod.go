package policy

import (
	"fmt"
)

// Annotations isolator sets on the pods it mutates: the class it set, and the rule that
// decided it ("<source>/<rule>").
const (
	AnnotationRuntimeClass = "isolator.dev/runtime-class"
	AnnotationRule         = "isolator.dev/rule"
)

// Pod is the part of a Pod that decisions depend on. It decodes from Pod JSON or YAML
// and ignores every other field, which keeps decoding cheap and keeps fields this build
// does not know out of the way.
type Pod struct {
	Metadata PodMeta `json:"metadata"`
	Spec     PodSpec `json:"spec"`
}

// PodMeta is the part of a Pod's metadata that decisions and messages use.
type PodMeta struct {
	Name         string            `json:"name,omitempty"`
	GenerateName string            `json:"generateName,omitempty"`
	Namespace    string            `json:"namespace,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// PodSpec is the part of a Pod's spec that decisions use.
type PodSpec struct {
	RuntimeClassName    *string     `json:"runtimeClassName,omitempty"`
	ServiceAccountName  string      `json:"serviceAccountName,omitempty"`
	HostNetwork         bool        `json:"hostNetwork,omitempty"`
	HostPID             bool        `json:"hostPID,omitempty"`
	HostIPC             bool        `json:"hostIPC,omitempty"`
	Containers          []Container `json:"containers,omitempty"`
	InitContainers      []Container `json:"initContainers,omitempty"`
	EphemeralContainers []Container `json:"ephemeralContainers,omitempty"`
}

// Container is the part of a container that decisions use.
type Container struct {
	Name  string `json:"name,omitempty"`
	Image string `json:"image,omitempty"`
}

// DisplayName identifies the pod in messages: its name, or its generateName prefix
// followed by "*" for pods whose name the apiserver has not yet chosen.
func (p *Pod) DisplayName() string {
	if p.Metadata.Name != "" {
		return p.Metadata.Name
	}
	if p.Metadata.GenerateName != "" {
		return p.Metadata.GenerateName + "*"
	}
	return "(unnamed)"
}

// Facts extracts the decision facts of the pod in namespace ns with the namespace's
// labels. Every image of containers, initContainers and ephemeral containers is
// normalised; an image that is not a valid reference is an error naming the container.
func (p *Pod) Facts(ns string, nsLabels map[string]string) (Facts, error) {
	return p.facts(ns, nsLabels, NormalizeImage)
}

// FactsCached is Facts with images normalised through c.
func (p *Pod) FactsCached(ns string, nsLabels map[string]string, c *ImageCache) (Facts, error) {
	return p.facts(ns, nsLabels, c.Normalize)
}

func (p *Pod) facts(ns string, nsLabels map[string]string, normalize func(string) (Image, error)) (Facts, error) {
	f := Facts{
		Namespace:       ns,
		NamespaceLabels: nsLabels,
		PodLabels:       p.Metadata.Labels,
		HostNetwork:     p.Spec.HostNetwork,
		HostPID:         p.Spec.HostPID,
		HostIPC:         p.Spec.HostIPC,
	}
	if p.Spec.RuntimeClassName != nil {
		f.RuntimeClassName = *p.Spec.RuntimeClassName
	}
	// The apiserver sets "default" before any webhook runs; a pod read from a file may
	// not say it.
	f.ServiceAccountName = p.Spec.ServiceAccountName
	if f.ServiceAccountName == "" {
		f.ServiceAccountName = "default"
	}
	n := len(p.Spec.Containers) + len(p.Spec.InitContainers) + len(p.Spec.EphemeralContainers)
	if n > 0 {
		f.Images = make([]Image, 0, n)
	}
	for _, list := range []struct {
		field string
		cs    []Container
	}{{"initContainers", p.Spec.InitContainers}, {"containers", p.Spec.Containers}, {"ephemeralContainers", p.Spec.EphemeralContainers}} {
		for i := range list.cs {
			img, err := normalize(list.cs[i].Image)
			if err != nil {
				return f, fmt.Errorf("spec.%s[%d] (%s): %w", list.field, i, list.cs[i].Name, err)
			}
			f.Images = append(f.Images, img)
		}
	}
	return f, nil
}

// ClassSetByIsolator reports whether the pod's runtimeClassName is one isolator set in
// an earlier pass (its annotation names the same class). Such a class is not the pod
// author's choice. A pod that fakes the annotation gains nothing: it is only decided.
func (p *Pod) ClassSetByIsolator() bool {
	rc := p.Spec.RuntimeClassName
	return rc != nil && *rc != "" && p.Metadata.Annotations[AnnotationRuntimeClass] == *rc
}

// EvaluatePod decides a pod as the webhook does when it is created, from its facts
// (Pod.Facts). A class isolator set itself is decided afresh, as if the pod named none;
// when the fresh decision sets that same class, it stands (ActionKeep), as the
// apiserver's second call of the webhook finds after the RuntimeClass plugin ran.
// ownClass reports that the pod's class was isolator's. Every tool that explains
// decisions uses this, so that they say what the webhook does.
func (s *Snapshot) EvaluatePod(p *Pod, f *Facts) (d Decision, ownClass bool) {
	if !p.ClassSetByIsolator() {
		return s.Evaluate(f), false
	}
	fresh := *f
	fresh.RuntimeClassName = ""
	d = s.Evaluate(&fresh)
	if d.Action == ActionSet && d.RuntimeClass == f.RuntimeClassName {
		d.Action = ActionKeep
	}
	return d, true
}
