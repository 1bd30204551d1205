package harness

import (
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Defence names what stopped a request. The apiserver's answer tells them apart: each
// admission plugin, RBAC and validation word their refusals their own way.
type Defence string

// The defences a security test names.
const (
	ByWebhook       Defence = "the isolator webhook"
	ByPolicyWebhook Defence = "the isolator policy validator"
	ByBackstop      Defence = "the backstop ValidatingAdmissionPolicy"
	ByLabelGuard    Defence = "the namespace label guard"
	ByRBAC          Defence = "RBAC"
	ByValidation    Defence = "apiserver validation"
)

var rbacRefusal = regexp.MustCompile(`is forbidden: User ".*" cannot [a-z]+ resource`)

// DefenceOf tells which defence refused a request, from its status and message.
func DefenceOf(err error) (Defence, bool) {
	msg := err.Error()
	switch {
	case apierrors.IsForbidden(err) && strings.Contains(msg, `admission webhook "pods.isolator.dev" denied the request: isolator: `):
		return ByWebhook, true
	case apierrors.IsForbidden(err) && strings.Contains(msg, `admission webhook "policies.isolator.dev" denied the request: isolator: `):
		return ByPolicyWebhook, true
	case apierrors.IsForbidden(err) && strings.Contains(msg, "ValidatingAdmissionPolicy 'isolator-backstop' with binding 'isolator-backstop' denied request"):
		return ByBackstop, true
	case apierrors.IsForbidden(err) && strings.Contains(msg, "ValidatingAdmissionPolicy 'isolator-namespace-labels' with binding 'isolator-namespace-labels' denied request"):
		return ByLabelGuard, true
	case apierrors.IsForbidden(err) && rbacRefusal.MatchString(msg):
		return ByRBAC, true
	case apierrors.IsInvalid(err):
		return ByValidation, true
	}
	return "", false
}

// RefusedBy asserts that a request was refused by want, and that the refusal says each
// of mentions (the rule, the class required, ...). It logs the defence.
func RefusedBy(t testing.TB, what string, err error, want Defence, mentions ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: admitted; want a refusal by %s", what, want)
		return
	}
	got, ok := DefenceOf(err)
	switch {
	case !ok:
		t.Errorf("%s: failed, but not with a refusal by any defence: %v", what, err)
		return
	case got != want:
		t.Errorf("%s: refused by %s; want %s: %v", what, got, want, err)
		return
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("%s: the refusal by %s does not say %q: %v", what, got, m, err)
		}
	}
	t.Logf("%s: refused by %s: %v", what, got, err)
}

// AdmittedWith asserts that a pod was admitted with runtime class want ("" for none).
func AdmittedWith(t testing.TB, what string, got *corev1.Pod, err error, want string) {
	t.Helper()
	if err != nil {
		d, _ := DefenceOf(err)
		t.Errorf("%s: refused (by %q); want admitted with %q: %v", what, d, want, err)
		return
	}
	if c := ClassOf(got); c != want {
		t.Errorf("%s: admitted with runtimeClassName %q; want %q", what, c, want)
		return
	}
	t.Logf("%s: admitted with %q", what, want)
}

// ClassOf is a pod's runtimeClassName, "" when it names none.
func ClassOf(p *corev1.Pod) string {
	if p == nil || p.Spec.RuntimeClassName == nil {
		return ""
	}
	return *p.Spec.RuntimeClassName
}
