package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// MaxReviewBytes caps an AdmissionReview body, as controller-runtime does: the apiserver
// caps objects at about 3 MiB in etcd and requests at 3 MiB plus overhead.
const MaxReviewBytes = 7 << 20

var admissionReviewType = metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}

// podReview is an AdmissionReview decoded in one pass straight into the fields the
// decision needs; everything else in the pod (env, volumes, resources, ...) is skipped.
type podReview struct {
	APIVersion string      `json:"apiVersion"`
	Kind       string      `json:"kind"`
	Request    *podRequest `json:"request"`
}

var bodyPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// ServeHTTP serves /mutate-pods. It is controller-runtime's admission protocol (the same
// size cap, content-type check, panic recovery and error responses, and
// controller_runtime_webhook_* metrics through the webhook server), with a decoder that
// reads only what the decision needs, once.
func (m *PodMutator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var uid = ""
	defer func() {
		if p := recover(); p != nil {
			ctrl.LoggerFrom(r.Context()).Error(fmt.Errorf("panic: %v", p), "admission handler panicked")
			resp := admission.Errored(http.StatusInternalServerError, fmt.Errorf("panic: %v [recovered]", p))
			resp.UID = typesUID(uid)
			writeReview(w, resp)
		}
	}()
	if r.Body == nil || r.Body == http.NoBody {
		writeReview(w, admission.Errored(http.StatusBadRequest, errors.New("request body is empty")))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		writeReview(w, admission.Errored(http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", ct)))
		return
	}
	buf := bodyPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bodyPool.Put(buf)
	n, err := buf.ReadFrom(io.LimitReader(r.Body, MaxReviewBytes+1))
	if err != nil {
		writeReview(w, admission.Errored(http.StatusBadRequest, fmt.Errorf("reading the request body: %w", err)))
		return
	}
	if n > MaxReviewBytes {
		writeReview(w, admission.Errored(http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", MaxReviewBytes)))
		return
	}
	var review podReview
	if err := json.Unmarshal(buf.Bytes(), &review); err != nil {
		writeReview(w, admission.Errored(http.StatusBadRequest, fmt.Errorf("the body is not an AdmissionReview of a Pod: %w", err)))
		return
	}
	if review.Request == nil {
		writeReview(w, admission.Errored(http.StatusBadRequest, errors.New("the body is not an AdmissionReview with a request: expected apiVersion admission.k8s.io/v1, kind AdmissionReview")))
		return
	}
	if review.APIVersion != admissionReviewType.APIVersion || review.Kind != admissionReviewType.Kind {
		resp := admission.Errored(http.StatusBadRequest, fmt.Errorf("expected apiVersion %s, kind AdmissionReview; got apiVersion %q, kind %q: list only v1 in admissionReviewVersions", admissionReviewType.APIVersion, review.APIVersion, review.Kind))
		resp.UID = review.Request.UID
		writeReview(w, resp)
		return
	}
	uid = string(review.Request.UID)
	resp := m.decide(r.Context(), review.Request)
	if err := resp.Complete(admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: review.Request.UID}}); err != nil {
		resp = admission.Errored(http.StatusInternalServerError, err)
		resp.UID = review.Request.UID
	}
	writeReview(w, resp)
}

// writeReview writes resp as an AdmissionReview v1. Errors travel inside a 200 response,
// as the admission protocol requires.
func writeReview(w http.ResponseWriter, resp admission.Response) {
	if resp.Result == nil {
		resp.Result = &metav1.Status{}
	}
	if resp.Result.Code == 0 {
		resp.Result.Code = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	out := admissionv1.AdmissionReview{TypeMeta: admissionReviewType, Response: &resp.AdmissionResponse}
	if err := json.NewEncoder(w).Encode(&out); err != nil {
		ctrl.Log.WithName("admission").Error(err, "writing the admission response")
	}
}

func typesUID(s string) types.UID { return types.UID(s) }
