package webhook

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
)

// assertGolden compares got with the golden file; UPDATE_GOLDEN=1 rewrites it.
func assertGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs (UPDATE_GOLDEN=1 refreshes it):\n--- want\n%s\n--- got\n%s", path, want, got)
	}
}

// checkStaleGoldens fails for a golden file whose input is gone.
func checkStaleGoldens(t *testing.T, dir string, inputs []string) {
	t.Helper()
	have := map[string]bool{}
	for _, in := range inputs {
		have[strings.TrimSuffix(filepath.Base(in), filepath.Ext(in))] = true
	}
	goldens, _ := filepath.Glob(filepath.Join(dir, "*.golden"))
	for _, g := range goldens {
		name := strings.TrimSuffix(filepath.Base(g), ".golden")
		if !have[name] {
			if os.Getenv("UPDATE_GOLDEN") == "1" {
				_ = os.Remove(g)
				continue
			}
			t.Errorf("stale golden %s has no input; delete it or run with UPDATE_GOLDEN=1", g)
		}
	}
}

func prettyJSON(t *testing.T, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// TestHandlerWritesEncodingJSON: for every golden input, the bytes the handler writes
// are what encoding/json writes for the same AdmissionReview (admissionwire writes them
// by hand, without reflection).
func TestHandlerWritesEncodingJSON(t *testing.T) {
	mut, _ := testMutator(t)
	inputs, err := filepath.Glob("testdata/admission/*.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		body, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		got := serve(mut, body).Body.Bytes()
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(got, &review); err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(&review); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%s: the handler wrote\n%s\nencoding/json writes\n%s", in, got, want.Bytes())
		}
	}
}
