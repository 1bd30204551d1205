// Package admissionwire is isolator's AdmissionReview wire format: a one-pass decoder
// that reads only what a decision needs from a pod's review (with exactly
// encoding/json's result), and a response writer that writes a Verdict byte for byte as
// encoding/json would, without reflection. It decides nothing.
package admissionwire

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/isolator-dev/isolator/policy"
)

// ReviewType is the only AdmissionReview version isolator speaks.
var ReviewType = metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}

// Review is an AdmissionReview decoded in one pass straight into the fields the
// decision needs; everything else in the pod (env, volumes, resources, ...) is skipped.
type Review struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Request    *Request `json:"request"`
}

// Request is the part of an AdmissionReview request the mutator reads.
type Request struct {
	UID         types.UID                   `json:"uid"`
	Resource    metav1.GroupVersionResource `json:"resource"`
	SubResource string                      `json:"subResource,omitempty"`
	Namespace   string                      `json:"namespace,omitempty"`
	Operation   admissionv1.Operation       `json:"operation"`
	Object      *policy.Pod                 `json:"object,omitempty"`
}

// bufPool holds request and response buffers (GetBuf, PutBuf). A buffer that grew past maxPooledBuf (a
// huge pod) is dropped rather than kept alive by the pool.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxPooledBuf = 256 << 10

func GetBuf() *[]byte { return bufPool.Get().(*[]byte) }

func PutBuf(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// Verdict is one admission answer. It holds plain values rather than an
// admissionv1.AdmissionResponse, so that answering allocates nothing and appendReview
// can write it without reflection.
type Verdict struct {
	Allowed bool
	// Code is the status code; 0 means 200.
	Code    int32
	Reason  metav1.StatusReason
	Message string
	// PatchOp is "add" or "replace" for a patch that sets Class and records Class and
	// Rule in isolator's annotations; empty for no patch.
	PatchOp        string
	Class, Rule    string
	HasAnnotations bool
	Warning        string
	Audit          [NumAuditKeys]string
}

// Positions of the audit annotations in Verdict.Audit. The apiserver prefixes their
// keys with the webhook's name: pods.isolator.dev/action and so on.
const (
	AuditAction = iota
	AuditAuditAction
	AuditAuditRule
	AuditAuditRuntimeClass
	AuditReason
	AuditRule
	AuditRuntimeClass
	NumAuditKeys
)

// AuditKeys are the audit annotation keys by position, in the sorted order
// encoding/json writes a map in.
var AuditKeys = [NumAuditKeys]string{"action", "audit-action", "audit-rule", "audit-runtime-class", "reason", "rule", "runtime-class"}

// Allowed admits the pod unchanged.
func Allowed(message string) Verdict {
	return Verdict{Allowed: true, Code: http.StatusOK, Message: message}
}

// Denied refuses the pod with a 403 and message.
func Denied(message string) Verdict {
	return Verdict{Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: message}
}

// Errored answers a request that can't be decided (malformed, or a failed lookup).
func Errored(code int32, err error) *Verdict {
	return &Verdict{Code: code, Message: err.Error()}
}

// Patch renders the JSON patch: one op on /spec/runtimeClassName, and isolator's
// annotations (one op when the pod has none yet, else one per key).
func (v *Verdict) Patch(b []byte) []byte {
	if v.PatchOp == "" {
		return b
	}
	b = append(b, `[{"op":"`...)
	b = append(b, v.PatchOp...)
	b = append(b, `","path":"/spec/runtimeClassName","value":`...)
	b = strconv.AppendQuote(b, v.Class)
	b = append(b, '}')
	if v.HasAnnotations {
		b = append(b, `,{"op":"add","path":"/metadata/annotations/isolator.dev~1runtime-class","value":`...)
		b = strconv.AppendQuote(b, v.Class)
		b = append(b, `},{"op":"add","path":"/metadata/annotations/isolator.dev~1rule","value":`...)
		b = strconv.AppendQuote(b, v.Rule)
		b = append(b, `}]`...)
	} else {
		b = append(b, `,{"op":"add","path":"/metadata/annotations","value":{"isolator.dev/runtime-class":`...)
		b = strconv.AppendQuote(b, v.Class)
		b = append(b, `,"isolator.dev/rule":`...)
		b = strconv.AppendQuote(b, v.Rule)
		b = append(b, `}}]`...)
	}
	return b
}

// contentTypeJSON is shared by every response: net/http only reads header values, and
// a shared slice saves an allocation per request.
var contentTypeJSON = []string{"application/json"}

// WriteReview writes v as an AdmissionReview v1. Errors travel inside a 200 response,
// as the admission protocol requires.
func WriteReview(w http.ResponseWriter, uid types.UID, v *Verdict) {
	buf := GetBuf()
	defer PutBuf(buf)
	*buf = AppendReview((*buf)[:0], uid, v)
	w.Header()["Content-Type"] = contentTypeJSON
	if _, err := w.Write(*buf); err != nil {
		ctrl.Log.WithName("admission").V(1).Info("writing the admission response failed", "error", err.Error())
	}
}

// AppendReview appends the AdmissionReview of v byte for byte as
// json.NewEncoder(w).Encode(&admissionv1.AdmissionReview{...}) writes it (with its
// trailing newline); TestAppendReviewMatchesEncodingJSON holds it to that.
func AppendReview(b []byte, uid types.UID, v *Verdict) []byte {
	b = append(b, `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","response":{"uid":`...)
	b = appendJSONString(b, string(uid))
	if v.Allowed {
		b = append(b, `,"allowed":true,"status":{"metadata":{}`...)
	} else {
		b = append(b, `,"allowed":false,"status":{"metadata":{}`...)
	}
	if v.Message != "" {
		b = append(b, `,"message":`...)
		b = appendJSONString(b, v.Message)
	}
	if v.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, string(v.Reason))
	}
	code := v.Code
	if code == 0 {
		code = http.StatusOK
	}
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, '}')
	if v.PatchOp != "" {
		var scratch [512]byte
		p := v.Patch(scratch[:0])
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, p)
		b = append(b, `","patchType":"JSONPatch"`...)
	}
	first := true
	for i, val := range v.Audit {
		if val == "" {
			continue
		}
		if first {
			b = append(b, `,"auditAnnotations":{`...)
			first = false
		} else {
			b = append(b, ',')
		}
		b = appendJSONString(b, AuditKeys[i])
		b = append(b, ':')
		b = appendJSONString(b, val)
	}
	if !first {
		b = append(b, '}')
	}
	if v.Warning != "" {
		b = append(b, `,"warnings":[`...)
		b = appendJSONString(b, v.Warning)
		b = append(b, ']')
	}
	return append(b, "}}\n"...)
}

// appendJSONString quotes s as encoding/json does. Plain printable ASCII is copied; any
// other string (quotes, HTML characters, control characters, non-ASCII) is rare here
// and left to encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !plainJSONOut[s[i]] {
			q, err := json.Marshal(s)
			if err != nil { // a string always marshals
				panic(err)
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// plainJSONOut marks the bytes encoding/json writes unchanged inside a string.
var plainJSONOut = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		switch c {
		case '"', '\\', '<', '>', '&':
		default:
			t[c] = true
		}
	}
	return t
}()
