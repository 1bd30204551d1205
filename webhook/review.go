package webhook

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
)

// MaxReviewBytes caps an AdmissionReview body, as controller-runtime does: the apiserver
// caps objects at about 3 MiB in etcd and requests at 3 MiB plus overhead.
const MaxReviewBytes = 7 << 20

// Bounds on reading request bodies, so that clients that send slowly, or stop halfway,
// can't make the webhook hold memory it lacks (the apiserver sends a whole review at
// once, in well under a second).
const (
	// BodyReadTimeout bounds reading one body, from the first byte of the request. The
	// apiserver gives a webhook call at most 30 s (timeoutSeconds), and isolator's
	// configuration 3 s.
	BodyReadTimeout = 10 * time.Second
	// smallBody is what any request may read at once; nearly every pod's review fits.
	smallBody = 64 << 10
	// LargeBodies is how many bodies over smallBody are read at once. A request that
	// finds them all taken waits for one until its read deadline, and then fails with
	// 503, which the apiserver answers by failing open to the backstop.
	LargeBodies = 4
)

// Reasons a request is shed, the label of isolator_admission_requests_shed_total.
const (
	shedTooLarge = "too_large"
	shedSlow     = "slow"
	shedBusy     = "busy"
)

func (m *PodMutator) shed(reason string) {
	if m.Metrics != nil {
		m.Metrics.Shed.WithLabelValues(reason).Inc()
	}
}

// bodySlots holds one token per large body being read.
type bodySlots chan struct{}

// errBusy: every large-body slot stayed taken until the request's read deadline.
var errBusy = errors.New("too many large admission requests are being read at once; try again")

var admissionReviewType = metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}

// podReview is an AdmissionReview decoded in one pass straight into the fields the
// decision needs; everything else in the pod (env, volumes, resources, ...) is skipped.
type podReview struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Request    *podRequest `json:"request"`
}

// bufPool holds request and response buffers. A buffer that grew past maxPooledBuf (a
// huge pod) is dropped rather than kept alive by the pool.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

const maxPooledBuf = 256 << 10

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) <= maxPooledBuf {
		*b = (*b)[:0]
		bufPool.Put(b)
	}
}

// ServeHTTP serves /mutate-pods. It is controller-runtime's admission protocol (the same
// size cap, content-type check, panic recovery and error responses, and
// controller_runtime_webhook_* metrics through the webhook server), with a decoder that
// reads only what the decision needs, once, and a response written straight to bytes.
func (m *PodMutator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var uid types.UID
	defer func() {
		if p := recover(); p != nil {
			ctrl.LoggerFrom(r.Context()).Error(fmt.Errorf("panic: %v", p), "admission handler panicked")
			writeReview(w, uid, errored(http.StatusInternalServerError, fmt.Errorf("panic: %v [recovered]", p)))
		}
	}()
	if r.Body == nil || r.Body == http.NoBody {
		writeReview(w, "", errored(http.StatusBadRequest, errors.New("request body is empty")))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		writeReview(w, "", errored(http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", ct)))
		return
	}
	if r.ContentLength > MaxReviewBytes {
		m.shed(shedTooLarge)
		writeReview(w, "", errored(http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", MaxReviewBytes)))
		return
	}
	// A client that sends its body slowly, or not at all, is cut off at the deadline
	// (ResponseWriters that can't set one, as in tests, return an error, ignored).
	timeout := m.BodyReadTimeout
	if timeout == 0 {
		timeout = BodyReadTimeout
	}
	deadline := time.Now().Add(timeout)
	_ = http.NewResponseController(w).SetReadDeadline(deadline)
	buf := getBuf()
	defer putBuf(buf)
	body, err := m.readBody(r.Context(), *buf, r.Body, r.ContentLength, deadline)
	*buf = body[:0]
	switch {
	case errors.Is(err, errBusy):
		// Not an answer, so that the apiserver fails open: the backstop still checks the
		// pod, and a busy webhook never refuses one by itself.
		m.shed(shedBusy)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		m.shed(shedSlow)
		http.Error(w, fmt.Sprintf("the request body did not arrive within %s", timeout), http.StatusRequestTimeout)
		return
	case err != nil:
		writeReview(w, "", errored(http.StatusBadRequest, fmt.Errorf("reading the request body: %w", err)))
		return
	}
	if len(body) > MaxReviewBytes {
		m.shed(shedTooLarge)
		writeReview(w, "", errored(http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", MaxReviewBytes)))
		return
	}
	review, err := decodeReview(body)
	if err != nil {
		writeReview(w, "", errored(http.StatusBadRequest, fmt.Errorf("the body is not an AdmissionReview of a Pod: %w", err)))
		return
	}
	if review.Request == nil {
		writeReview(w, "", errored(http.StatusBadRequest, errors.New("the body is not an AdmissionReview with a request: expected apiVersion admission.k8s.io/v1, kind AdmissionReview")))
		return
	}
	uid = review.Request.UID
	if review.APIVersion != admissionReviewType.APIVersion || review.Kind != admissionReviewType.Kind {
		writeReview(w, uid, errored(http.StatusBadRequest, fmt.Errorf("expected apiVersion %s, kind AdmissionReview; got apiVersion %q, kind %q: list only v1 in admissionReviewVersions", admissionReviewType.APIVersion, review.APIVersion, review.Kind)))
		return
	}
	v := m.decide(r.Context(), review.Request)
	writeReview(w, uid, &v)
}

// readBody reads at most MaxReviewBytes+1 bytes into buf: one more than the cap tells a
// body that is too large. Past smallBody it reads only while it holds one of the
// LargeBodies slots, so that at most that many large bodies are buffered at once, and
// it sizes the buffer once from the Content-Length when the client sent one.
func (m *PodMutator) readBody(ctx context.Context, buf []byte, body io.Reader, length int64, deadline time.Time) ([]byte, error) {
	buf, err := readInto(buf, body, smallBody)
	if err != nil || len(buf) < smallBody {
		return buf, err
	}
	if err := m.slots().acquire(ctx, deadline); err != nil {
		return buf, err
	}
	defer m.slots().release()
	if length > int64(len(buf)) && cap(buf) < int(length)+1 {
		grown := make([]byte, len(buf), length+1)
		copy(grown, buf)
		buf = grown
	}
	return readInto(buf, body, MaxReviewBytes+1)
}

func (m *PodMutator) slots() bodySlots {
	m.slotsOnce.Do(func() {
		if m.LargeBodySlots == nil {
			m.LargeBodySlots = make(bodySlots, LargeBodies)
		}
	})
	return m.LargeBodySlots
}

func (s bodySlots) acquire(ctx context.Context, deadline time.Time) error {
	select {
	case s <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case s <- struct{}{}:
		return nil
	case <-t.C:
		return errBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s bodySlots) release() { <-s }

// readInto appends body to buf until EOF or until buf holds limit bytes.
func readInto(buf []byte, body io.Reader, limit int) ([]byte, error) {
	for {
		if len(buf) == cap(buf) {
			// Double, as bytes.Buffer does: append grows large slices by only 1.25x,
			// which would copy a 7 MiB body many times over.
			grown := make([]byte, len(buf), min(2*cap(buf)+512, limit))
			copy(grown, buf)
			buf = grown
		}
		room := buf[len(buf):cap(buf)]
		if len(buf)+len(room) > limit {
			room = room[:limit-len(buf)]
		}
		n, err := body.Read(room)
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
		if len(buf) >= limit {
			return buf, nil
		}
	}
}

// verdict is one admission answer. It holds plain values rather than an
// admissionv1.AdmissionResponse, so that answering allocates nothing and appendReview
// can write it without reflection.
type verdict struct {
	allowed bool
	// code is the status code; 0 means 200.
	code    int32
	reason  metav1.StatusReason
	message string
	// patchOp is "add" or "replace" for a patch that sets class and records class and
	// rule in isolator's annotations; empty for no patch.
	patchOp        string
	class, rule    string
	hasAnnotations bool
	warning        string
	audit          [numAuditKeys]string
}

// The audit annotation keys in the sorted order encoding/json writes a map in.
var auditKeys = [...]string{auditAction, auditAuditAction, auditAuditRule, auditAuditRuntimeClass, auditReason, auditRule, auditRuntimeClass}

const numAuditKeys = 7

// Positions of the audit annotations in verdict.audit.
const (
	auditAtAction = iota
	auditAtAuditAction
	auditAtAuditRule
	auditAtAuditRuntimeClass
	auditAtReason
	auditAtRule
	auditAtRuntimeClass
)

func allowed(message string) verdict {
	return verdict{allowed: true, code: http.StatusOK, message: message}
}

func denied(message string) verdict {
	return verdict{code: http.StatusForbidden, reason: metav1.StatusReasonForbidden, message: message}
}

func errored(code int32, err error) *verdict {
	return &verdict{code: code, message: err.Error()}
}

// patch renders the JSON patch: one op on /spec/runtimeClassName, and isolator's
// annotations (one op when the pod has none yet, else one per key).
func (v *verdict) patch(b []byte) []byte {
	if v.patchOp == "" {
		return b
	}
	b = append(b, `[{"op":"`...)
	b = append(b, v.patchOp...)
	b = append(b, `","path":"/spec/runtimeClassName","value":`...)
	b = strconv.AppendQuote(b, v.class)
	b = append(b, '}')
	if v.hasAnnotations {
		b = append(b, `,{"op":"add","path":"/metadata/annotations/isolator.dev~1runtime-class","value":`...)
		b = strconv.AppendQuote(b, v.class)
		b = append(b, `},{"op":"add","path":"/metadata/annotations/isolator.dev~1rule","value":`...)
		b = strconv.AppendQuote(b, v.rule)
		b = append(b, `}]`...)
	} else {
		b = append(b, `,{"op":"add","path":"/metadata/annotations","value":{"isolator.dev/runtime-class":`...)
		b = strconv.AppendQuote(b, v.class)
		b = append(b, `,"isolator.dev/rule":`...)
		b = strconv.AppendQuote(b, v.rule)
		b = append(b, `}}]`...)
	}
	return b
}

// response is the verdict as the admission API type, for tests and for anyone reading
// it as a Kubernetes object. appendReview writes exactly its encoding/json encoding.
func (v *verdict) response(uid types.UID) *admissionv1.AdmissionResponse {
	code := v.code
	if code == 0 {
		code = http.StatusOK
	}
	r := &admissionv1.AdmissionResponse{UID: uid, Allowed: v.allowed,
		Result: &metav1.Status{Code: code, Reason: v.reason, Message: v.message}}
	if v.patchOp != "" {
		r.Patch = v.patch(nil)
		pt := admissionv1.PatchTypeJSONPatch
		r.PatchType = &pt
	}
	for i, val := range v.audit {
		if val != "" {
			if r.AuditAnnotations == nil {
				r.AuditAnnotations = map[string]string{}
			}
			r.AuditAnnotations[auditKeys[i]] = val
		}
	}
	if v.warning != "" {
		r.Warnings = []string{v.warning}
	}
	return r
}

// contentTypeJSON is shared by every response: net/http only reads header values, and
// a shared slice saves an allocation per request.
var contentTypeJSON = []string{"application/json"}

// writeReview writes v as an AdmissionReview v1. Errors travel inside a 200 response,
// as the admission protocol requires.
func writeReview(w http.ResponseWriter, uid types.UID, v *verdict) {
	buf := getBuf()
	defer putBuf(buf)
	*buf = appendReview((*buf)[:0], uid, v)
	w.Header()["Content-Type"] = contentTypeJSON
	if _, err := w.Write(*buf); err != nil {
		ctrl.Log.WithName("admission").V(1).Info("writing the admission response failed", "error", err.Error())
	}
}

// appendReview appends the AdmissionReview of v byte for byte as
// json.NewEncoder(w).Encode(&admissionv1.AdmissionReview{...}) writes it (with its
// trailing newline); TestAppendReviewMatchesEncodingJSON holds it to that.
func appendReview(b []byte, uid types.UID, v *verdict) []byte {
	b = append(b, `{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","response":{"uid":`...)
	b = appendJSONString(b, string(uid))
	if v.allowed {
		b = append(b, `,"allowed":true,"status":{"metadata":{}`...)
	} else {
		b = append(b, `,"allowed":false,"status":{"metadata":{}`...)
	}
	if v.message != "" {
		b = append(b, `,"message":`...)
		b = appendJSONString(b, v.message)
	}
	if v.reason != "" {
		b = append(b, `,"reason":`...)
		b = appendJSONString(b, string(v.reason))
	}
	code := v.code
	if code == 0 {
		code = http.StatusOK
	}
	b = append(b, `,"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, '}')
	if v.patchOp != "" {
		var scratch [512]byte
		p := v.patch(scratch[:0])
		b = append(b, `,"patch":"`...)
		b = base64.StdEncoding.AppendEncode(b, p)
		b = append(b, `","patchType":"JSONPatch"`...)
	}
	first := true
	for i, val := range v.audit {
		if val == "" {
			continue
		}
		if first {
			b = append(b, `,"auditAnnotations":{`...)
			first = false
		} else {
			b = append(b, ',')
		}
		b = appendJSONString(b, auditKeys[i])
		b = append(b, ':')
		b = appendJSONString(b, val)
	}
	if !first {
		b = append(b, '}')
	}
	if v.warning != "" {
		b = append(b, `,"warnings":[`...)
		b = appendJSONString(b, v.warning)
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
