package webhook

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/isolator-dev/isolator/internal/testfixtures/samplepod"
)

// malformedCases are requests a broken or hostile client could send. Each must get a
// clean 4xx inside an AdmissionReview (or a clear decision), never a panic, with memory
// bounded by a small multiple of the body.
func malformedCases(t testing.TB) map[string][]byte {
	t.Helper()
	cases, err := samplepod.MalformedReviews()
	if err != nil {
		t.Fatal(err)
	}
	return cases
}

func TestMalformedRequests(t *testing.T) {
	mut, _ := testMutator(t)
	for name, body := range malformedCases(t) {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			rec := serve(mut, body)
			runtime.ReadMemStats(&after)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP %d: admission errors travel inside a 200 AdmissionReview", rec.Code)
			}
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
				t.Fatalf("response is not an AdmissionReview: %v\n%.300s", err, rec.Body.String())
			}
			r := review.Response
			code := int32(200)
			if r.Result != nil && r.Result.Code != 0 {
				code = r.Result.Code
			}
			if code >= 500 {
				t.Errorf("code %d (%s): a bad request must get a 4xx, not a server error", code, r.Result.Message)
			}
			if !r.Allowed && (r.Result == nil || r.Result.Message == "") {
				t.Error("refused without a message")
			}
			if r.Allowed && len(r.Patch) > 0 && name != "unknown fields" && name != "invalid UTF-8" && name != "just under the cap" {
				t.Errorf("a malformed request was mutated: %s", r.Patch)
			}
			// Bounded memory: a few times the body (reading it, and the strings decoded
			// from it), never more; the race detector's bookkeeping roughly doubles it.
			limit := uint64(4*len(body)) + (2 << 20)
			if raceEnabled {
				limit *= 3
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > limit {
				t.Errorf("allocated %d bytes for a %d-byte body", alloc, len(body))
			}
			t.Logf("code %d allowed %v: %.200s", code, r.Allowed, messageOf(r))
		})
	}
}

func messageOf(r *admissionv1.AdmissionResponse) string {
	if r.Result == nil {
		return ""
	}
	return r.Result.Message
}

// FuzzHandler feeds arbitrary bodies to /mutate-pods: the answer is always a 200
// AdmissionReview, never a panic, and never a 5xx for bad input.
func FuzzHandler(f *testing.F) {
	inputs, _ := filepath.Glob("testdata/admission/*.json")
	for _, in := range inputs {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, b := range malformedCases(f) {
		if len(b) < 64<<10 {
			f.Add(b)
		}
	}
	mut, _ := testMutator(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := serve(mut, body)
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP %d", rec.Code)
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
			t.Fatalf("not an AdmissionReview: %v", err)
		}
		if r := review.Response; r.Result != nil && r.Result.Code >= 500 {
			t.Fatalf("server error for client input: %d %s", r.Result.Code, r.Result.Message)
		}
	})
}
