package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"

	"github.com/isolator-dev/isolator/policy"
)

// testMutator builds the pod mutator over testdata/policy.yaml, with namespaces and
// RuntimeClasses preloaded as the informers would deliver them.
func testMutator(t testing.TB) (*PodMutator, *Metrics) {
	t.Helper()
	f, err := os.Open("testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srcs, errs := policy.ReadSources("policy.yaml", f)
	if len(errs) > 0 {
		t.Fatal(errs[0])
	}
	snap, err := policy.Compile(srcs...)
	if err != nil {
		t.Fatal(err)
	}
	ns := NewMetaIndex(namespaceGVK, nil)
	for name, labels := range map[string]map[string]string{
		"shop":        {"isolator.dev/trust": "untrusted"},
		"payments":    {"isolator.dev/trust": "trusted"},
		"tenant-acme": {},
		"gpu-lab":     {},
		"internal":    {},
	} {
		labels["kubernetes.io/metadata.name"] = name
		ns.Set(name, labels)
	}
	ns.MarkSynced()
	rcs := NewMetaIndex(runtimeClassGVK, nil)
	rcs.Set("kata-rc", nil)
	rcs.Set("runc-rc", nil)
	rcs.MarkSynced()
	m := NewMetrics(prometheus.NewRegistry())
	return &PodMutator{Policy: func() *policy.Snapshot { return snap }, Namespaces: ns, RuntimeClasses: rcs, Metrics: m, Images: policy.NewImageCache(100)}, m
}

// serve runs one raw AdmissionReview through controller-runtime's admission HTTP
// handler, exactly as the apiserver's request arrives.
func serve(h http.Handler, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestMutatorGolden(t *testing.T) {
	mut, _ := testMutator(t)
	h := mut
	inputs, err := filepath.Glob("testdata/admission/*.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	checkStaleGoldens(t, "testdata/admission", inputs)
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".json")
		t.Run(name, func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			rec := serve(h, body)
			if rec.Code != http.StatusOK {
				t.Fatalf("HTTP status %d; admission errors travel inside a 200 AdmissionReview", rec.Code)
			}
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
				t.Fatalf("response is not an AdmissionReview: %v\n%s", err, rec.Body.String())
			}
			assertGolden(t, filepath.Join("testdata/admission", name+".golden"), prettyJSON(t, rec.Body.Bytes()))
			checkInvariants(t, name, review.Response)
		})
	}
}

// checkInvariants asserts what every response must satisfy, whatever the golden says.
func checkInvariants(t *testing.T, name string, r *admissionv1.AdmissionResponse) {
	t.Helper()
	code := int32(200)
	if r.Result != nil && r.Result.Code != 0 {
		code = r.Result.Code
	}
	switch {
	case strings.HasPrefix(name, "error-"):
		if r.Allowed || code < 400 || code >= 500 {
			t.Errorf("malformed request: allowed=%v code=%d, want a clean 4xx", r.Allowed, code)
		}
	case strings.HasPrefix(name, "deny-"):
		if r.Allowed || code != http.StatusForbidden || !strings.Contains(r.Result.Message, "isolator:") {
			t.Errorf("want a 403 denial from isolator, got allowed=%v code=%d", r.Allowed, code)
		}
	case strings.HasPrefix(name, "set-"), strings.HasPrefix(name, "replace-"), name == "reinvocation-sidecar-changes-decision":
		if !r.Allowed || len(r.Patch) == 0 {
			t.Fatalf("want an allowed patch, got allowed=%v patch=%s", r.Allowed, r.Patch)
		}
		var ops []map[string]any
		if err := json.Unmarshal(r.Patch, &ops); err != nil {
			t.Fatalf("patch is not JSON: %v", err)
		}
		spec := 0
		for _, op := range ops {
			p, _ := op["path"].(string)
			switch {
			case p == "/spec/runtimeClassName":
				spec++
			case strings.HasPrefix(p, "/metadata/annotations"):
			default:
				t.Errorf("patch touches %s; only /spec/runtimeClassName and isolator's annotations may change", p)
			}
		}
		if spec != 1 {
			t.Errorf("want exactly one op on /spec/runtimeClassName, got %d", spec)
		}
		if strings.HasPrefix(name, "replace-") && len(r.Warnings) == 0 {
			t.Error("a replacement must come with a warning")
		}
	default:
		if !r.Allowed || len(r.Patch) != 0 {
			t.Errorf("want allowed without a patch, got allowed=%v patch=%s", r.Allowed, r.Patch)
		}
	}
}

func TestMutatorMetrics(t *testing.T) {
	mut, m := testMutator(t)
	h := mut
	for _, in := range []string{"set-untrusted-namespace", "set-untrusted-namespace", "deny-host-network", "audit-quay-image"} {
		body, err := os.ReadFile("testdata/admission/" + in + ".json")
		if err != nil {
			t.Fatal(err)
		}
		serve(h, body)
	}
	for _, c := range []struct {
		class, rule, action string
		want                float64
	}{
		{"kata-rc", "platform/untrusted", "set", 2},
		{"kata-rc", "platform/untrusted", "deny", 1},
	} {
		if got := testutil.ToFloat64(m.Decisions.WithLabelValues(c.class, c.rule, c.action)); got != c.want {
			t.Errorf("decisions{%s,%s,%s} = %v, want %v", c.class, c.rule, c.action, got, c.want)
		}
	}
	if got := testutil.ToFloat64(m.AuditDecisions.WithLabelValues("kata-rc", "platform/quay-audit", "set")); got != 1 {
		t.Errorf("audit decisions = %v, want 1", got)
	}
	if n := testutil.CollectAndCount(m.DecisionDuration); n != 1 {
		t.Errorf("decision duration histogram: %d series", n)
	}
}
