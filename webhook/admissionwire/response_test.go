package admissionwire

import (
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// response is the verdict as the admission API type, which AppendReview must write
// exactly as encoding/json does. appendReview writes exactly its encoding/json encoding.
func (v *Verdict) response(uid types.UID) *admissionv1.AdmissionResponse {
	code := v.Code
	if code == 0 {
		code = http.StatusOK
	}
	r := &admissionv1.AdmissionResponse{UID: uid, Allowed: v.Allowed,
		Result: &metav1.Status{Code: code, Reason: v.Reason, Message: v.Message}}
	if v.PatchOp != "" {
		r.Patch = v.Patch(nil)
		pt := admissionv1.PatchTypeJSONPatch
		r.PatchType = &pt
	}
	for i, val := range v.Audit {
		if val != "" {
			if r.AuditAnnotations == nil {
				r.AuditAnnotations = map[string]string{}
			}
			r.AuditAnnotations[AuditKeys[i]] = val
		}
	}
	if v.Warning != "" {
		r.Warnings = []string{v.Warning}
	}
	return r
}
