package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/isolator-dev/isolator/policy"
)

// ValidatePath is where the policy ConfigMap validator is served.
const ValidatePath = "/validate-policy"

// PolicyValidator refuses policy ConfigMaps that `isolator policy validate` would
// refuse, with the same field-path errors, so a bad policy fails at kubectl apply.
type PolicyValidator struct {
	// Store supplies the other policies in force, to report how this one merges.
	Store          *Store
	RuntimeClasses *MetaIndex
	Metrics        *Metrics
}

// Handle validates CREATE and UPDATE of a policy ConfigMap.
func (v *PolicyValidator) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return admission.Allowed("")
	}
	if req.Kind.Kind != "ConfigMap" {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("expected a ConfigMap, got %s", req.Kind.Kind))
	}
	var cm corev1.ConfigMap
	if err := json.Unmarshal(req.Object.Raw, &cm); err != nil {
		return admission.Errored(http.StatusBadRequest, fmt.Errorf("request.object is not a ConfigMap: %w", err))
	}
	if cm.Labels[policy.PolicyLabel] != "true" {
		return admission.Allowed("not a policy ConfigMap")
	}
	if cm.Name == "" {
		cm.Name = req.Name
	}
	if cm.Namespace == "" {
		cm.Namespace = req.Namespace
	}
	src, errs := ParseConfigMap(&cm)
	if len(errs) == 0 && v.Store != nil {
		src.AsTeam(v.Store.Namespace)
		if src.Team != "" {
			// A team policy must fit the cluster policies in force.
			errs = v.Store.Snapshot().CheckTeam(src)
		}
	}
	if len(errs) > 0 {
		if v.Metrics != nil {
			v.Metrics.PolicyDenials.WithLabelValues(string(req.Operation)).Inc()
		}
		lines := make([]string, 0, len(errs))
		for _, e := range errs {
			lines = append(lines, e.Error())
		}
		return admission.Denied(fmt.Sprintf("isolator: policy ConfigMap %s is invalid (%d problems):\n%s",
			cm.Name, len(errs), strings.Join(lines, "\n")))
	}
	var warnings []string
	for _, c := range src.Policy.Spec.RuntimeClasses {
		if v.RuntimeClasses == nil || !v.RuntimeClasses.Synced() {
			break
		}
		if _, ok, err := v.RuntimeClasses.Labels(ctx, c.Name); err == nil && !ok {
			warnings = append(warnings, fmt.Sprintf("RuntimeClass %s does not exist in this cluster: pods the policy sends to it will be denied until it is created", c.Name))
		}
	}
	if v.Store != nil {
		others := []policy.Source{*src}
		for _, s := range v.Store.LastGood() {
			if s.Name != src.Name {
				others = append(others, s)
			}
		}
		if snap, err := policy.Compile(others...); err != nil {
			warnings = append(warnings, "merging with the other policies failed: "+err.Error())
		} else {
			for _, w := range snap.Warnings() {
				// A team policy hears only about itself, not about other teams.
				if src.Team == "" || strings.Contains(w, src.Origin) || strings.Contains(w, src.Name) {
					warnings = append(warnings, "policies disagree: "+w)
				}
			}
		}
	}
	return admission.Allowed("").WithWarnings(warnings...)
}
