package admissionwire

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/isolator-dev/isolator/internal/testfixtures/samplepod"
)

// decodeEdgeCases are bodies where a hand-written JSON decoder most easily parts ways
// with encoding/json: each must decode to the same result or the same error.
func decodeEdgeCases(t testing.TB) map[string][]byte {
	valid, err := samplepod.Review("shop")
	if err != nil {
		t.Fatal(err)
	}
	sub := func(old, new string) []byte {
		if !bytes.Contains(valid, []byte(old)) {
			t.Fatalf("edge case: %q is not in the review", old)
		}
		return bytes.Replace(valid, []byte(old), []byte(new), 1)
	}
	const small = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","resource":{"group":"","version":"v1","resource":"pods"},"namespace":"shop","operation":"CREATE","object":%s}}`
	pod := func(obj string) []byte { return []byte(strings.Replace(small, "%s", obj, 1)) }
	return map[string][]byte{
		"valid":                          valid,
		"indented":                       prettyJSONBytes(t, valid),
		"case-folded top-level key":      sub(`"request":`, `"Request":`),
		"case-folded nested key":         sub(`"containers":`, `"Containers":`),
		"upper-case known key":           sub(`"image":`, `"IMAGE":`),
		"kelvin sign key":                sub(`"kind":"AdmissionReview"`, `"\u212aind":"AdmissionReview"`),
		"escaped key":                    sub(`"namespace":"shop"`, `"n\u0061mespace":"shop"`),
		"escaped unknown key":            sub(`"dryRun":`, `"dry\u0052un":`),
		"duplicate request":              append(valid[:len(valid)-1:len(valid)-1], []byte(`,"request":{"uid":"other"}}`)...),
		"duplicate label":                sub(`"tier":"web"`, `"tier":"web","tier":"db"`),
		"duplicate containers":           sub(`"volumes":`, `"containers":[{"name":"x"}],"volumes":`),
		"duplicate image":                sub(`"image":"registry.example.com/shop/service-0:1.0.0"`, `"image":"a","image":"b"`),
		"escaped image":                  sub(`"image":"registry.example.com/shop/service-0:1.0.0"`, `"image":"registry.example.com\/shop\/a\u0041:1"`),
		"surrogate pair in label":        sub(`"tier":"web"`, `"tier":"\ud83d\ude00"`),
		"lone surrogate in label":        sub(`"tier":"web"`, `"tier":"\ud83d"`),
		"non-ASCII label value":          sub(`"tier":"web"`, `"tier":"wéb ✓"`),
		"invalid UTF-8 in name":          sub(`"generateName":"storefront-7d9f8b6c5-"`, "\"generateName\":\"st\xff\xfeore\""),
		"invalid UTF-8 in skipped":       sub(`"value":"info"`, "\"value\":\"in\xc0fo\""),
		"control character":              sub(`"value":"info"`, "\"value\":\"in\tfo\""),
		"bad escape":                     sub(`"value":"info"`, `"value":"in\xfo"`),
		"short unicode escape":           sub(`"value":"info"`, `"value":"\u12"`),
		"null request":                   []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}`),
		"null object":                    pod(`null`),
		"null metadata and spec":         pod(`{"metadata":null,"spec":null}`),
		"null labels":                    pod(`{"metadata":{"labels":null,"annotations":{}},"spec":{}}`),
		"null label value":               pod(`{"metadata":{"labels":{"a":null}},"spec":{}}`),
		"number label value":             pod(`{"metadata":{"labels":{"a":1}},"spec":{}}`),
		"null containers":                pod(`{"spec":{"containers":null,"initContainers":[]}}`),
		"null container":                 pod(`{"spec":{"containers":[null,{"image":null,"name":"b"}]}}`),
		"many containers":                pod(`{"spec":{"containers":[` + strings.Repeat(`{"image":"nginx"},`, 40) + `{"image":"x"}]}}`),
		"runtimeClassName null":          pod(`{"spec":{"runtimeClassName":null,"hostNetwork":null}}`),
		"runtimeClassName set":           pod(`{"spec":{"runtimeClassName":"kata-rc","hostNetwork":true,"hostPID":false,"hostIPC":true}}`),
		"runtimeClassName number":        pod(`{"spec":{"runtimeClassName":5}}`),
		"hostNetwork string":             pod(`{"spec":{"hostNetwork":"true"}}`),
		"containers object":              pod(`{"spec":{"containers":{}}}`),
		"numbers":                        pod(`{"spec":{"x":[0,-0,1.5,-2e10,3E+2,4e-3,123456789012345678901234567890]}}`),
		"bad number leading zero":        pod(`{"spec":{"x":01}}`),
		"bad number dot":                 pod(`{"spec":{"x":1.}}`),
		"bad number exponent":            pod(`{"spec":{"x":1e}}`),
		"bad number minus":               pod(`{"spec":{"x":-}}`),
		"literals":                       pod(`{"spec":{"x":[true,false,null,{"a":[]},{},[[]]]}}`),
		"bad literal":                    pod(`{"spec":{"x":tru}}`),
		"trailing comma in object":       pod(`{"spec":{"x":1,}}`),
		"trailing comma in array":        pod(`{"spec":{"x":[1,]}}`),
		"missing colon":                  pod(`{"spec":{"x" 1}}`),
		"whitespace everywhere":          []byte(" \t\r\n{ \"apiVersion\" : \"admission.k8s.io/v1\" , \"request\" : { \"object\" : { \"spec\" : { \"containers\" : [ { \"image\" : \"nginx\" } , null ] } } } } \n"),
		"trailing garbage":               append(append([]byte{}, valid...), []byte(` x`)...),
		"two values":                     append(append([]byte{}, valid...), valid...),
		"byte order mark":                append([]byte("\xef\xbb\xbf"), valid...),
		"top-level array":                []byte(`[{"request":{}}]`),
		"top-level null":                 []byte(`null`),
		"top-level string":               []byte(`"x"`),
		"empty":                          {},
		"deep skipped nesting":           sub(`"dryRun":false`, `"dryRun":`+strings.Repeat(`[`, 600)+strings.Repeat(`]`, 600)),
		"deep skipped objects":           sub(`"dryRun":false`, `"dryRun":`+strings.Repeat(`{"a":`, 300)+`1`+strings.Repeat(`}`, 300)),
		"too deep":                       sub(`"dryRun":false`, `"dryRun":`+strings.Repeat(`[`, 10001)+strings.Repeat(`]`, 10001)),
		"unbalanced":                     sub(`"dryRun":false`, `"dryRun":[[{]]`),
		"string uid number":              sub(`"uid":"705ab4f5-6393-11e8-b7cc-42010a800002"`, `"uid":705`),
		"resource null":                  sub(`"resource":{"group":"","resource":"pods","version":"v1"}`, `"resource":null`),
		"resource extra fields":          sub(`"resource":{"group":"","resource":"pods","version":"v1"}`, `"resource":{"group":"","x":[1],"resource":"pods","version":"v1"}`),
		"object after unknown":           pod(`{"status":{"phase":"Pending"},"metadata":{"name":"a"},"spec":{}}`),
		"empty object and array":         pod(`{"metadata":{},"spec":{"containers":[]}}`),
		"escaped unknown value":          pod(`{"metadata":{"name":"a\"b\\c\/d\b\f\n\r\t\u00e9"},"spec":{}}`),
		"html characters in name":        pod(`{"metadata":{"name":"<a&b>"},"spec":{}}`),
		"unterminated string":            []byte(`{"apiVersion":"admission.k8s.io/v1`),
		"unterminated object":            []byte(`{"apiVersion":"admission.k8s.io/v1"`),
		"unterminated skipped string":    []byte(`{"x":"abc`),
		"unterminated escape":            []byte(`{"x":"abc\`),
		"annotation with escaped json":   pod(`{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"v1\",\"kind\":\"Pod\"}\n"}},"spec":{}}`),
		"namespace from metadata only":   []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","object":{"metadata":{"namespace":"shop"}}}}`),
		"operation and subresource":      []byte(`{"request":{"operation":"UPDATE","subResource":"status","kind":{"kind":"Pod"}}}`),
		"non-string apiVersion":          []byte(`{"apiVersion":1,"request":{}}`),
		"object key with non-ASCII":      pod(`{"metadata":{"labels":{"é":"x"}},"spec":{}}`),
		"label key with escape":          pod(`{"metadata":{"labels":{"a\u0062":"x"}},"spec":{}}`),
		"unknown key folding to a known": pod(`{"spec":{"CONTAINERS":[{"image":"a"}]}}`),
	}
}

func prettyJSONBytes(t testing.TB, b []byte) []byte {
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// differentialInputs are the golden admission inputs, the malformed requests and the
// edge cases.
func differentialInputs(t testing.TB) map[string][]byte {
	out := decodeEdgeCases(t)
	malformed, err := samplepod.MalformedReviews()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range malformed {
		out["malformed/"+name] = b
	}
	files, _ := filepath.Glob("../testdata/admission/*.json")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out["golden/"+filepath.Base(f)] = b
	}
	return out
}

// checkSameAsEncodingJSON fails unless Decode answers exactly as json.Unmarshal
// does, and unless every answer of the fast path alone is encoding/json's. It reports
// whether the fast path decoded body by itself.
func checkSameAsEncodingJSON(t *testing.T, body []byte) (fast bool) {
	t.Helper()
	var want Review
	wantErr := json.Unmarshal(body, &want)
	got, gotErr := Decode(body)
	if (gotErr == nil) != (wantErr == nil) || (gotErr != nil && gotErr.Error() != wantErr.Error()) {
		t.Fatalf("error: got %v, encoding/json says %v", gotErr, wantErr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded differently:\n got %s\nwant %s", dump(got), dump(want))
	}
	d := reviewDecoder{b: body}
	fastReview, fastErr := d.review()
	if fastErr != nil {
		if !errors.Is(fastErr, errSlowPath) {
			t.Fatalf("the fast path returned %v; its only error is errSlowPath", fastErr)
		}
		return false
	}
	if wantErr != nil {
		t.Fatalf("the fast path accepted a body encoding/json refuses: %v", wantErr)
	}
	if !reflect.DeepEqual(fastReview, want) {
		t.Fatalf("the fast path decoded differently:\n got %s\nwant %s", dump(fastReview), dump(want))
	}
	return true
}

func dump(r Review) string {
	b, _ := json.Marshal(r)
	return string(b)
}

// TestDecodeReviewDifferential holds the decoder to encoding/json, its reference, over
// every golden input, malformed request and edge case; and checks that the fast path
// really decodes the reviews the apiserver sends, rather than passing them on.
func TestDecodeReviewDifferential(t *testing.T) {
	slowOK := map[string]bool{ // valid for encoding/json, but left to it on purpose
		"case-folded top-level key": true, "case-folded nested key": true, "upper-case known key": true,
		"kelvin sign key": true, "escaped key": true, "escaped unknown key": true, "duplicate request": true,
		"duplicate label": true, "duplicate containers": true, "duplicate image": true, "top-level null": true,
		"too deep": true, "label key with escape": true, "object key with non-ASCII": true,
		"unknown key folding to a known": true, "deep skipped nesting": true, "malformed/null": true,
		"malformed/deeply nested JSON": true,
	}
	for name, body := range differentialInputs(t) {
		t.Run(name, func(t *testing.T) {
			fast := checkSameAsEncodingJSON(t, body)
			var v Review
			valid := json.Unmarshal(body, &v) == nil
			switch {
			case valid && !fast && !slowOK[name]:
				t.Errorf("a valid review went to the slow path")
			case fast && slowOK[name]:
				t.Errorf("decoded by the fast path, but listed as left to encoding/json")
			}
		})
	}
}

// FuzzDecodeReviewDifferential: for any body, the decoder answers as encoding/json.
func FuzzDecodeReviewDifferential(f *testing.F) {
	for _, b := range differentialInputs(f) {
		if len(b) < 64<<10 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		checkSameAsEncodingJSON(t, body)
	})
}

// TestAppendReviewMatchesEncodingJSON holds the hand-written response to what
// encoding/json writes for the same AdmissionResponse, for verdicts of every shape and
// with characters encoding/json escapes. (The webhook's TestHandlerWritesEncodingJSON
// holds every answer to its golden inputs to the same.)
func TestAppendReviewMatchesEncodingJSON(t *testing.T) {
	if !sortedStrings(AuditKeys[:]) {
		t.Fatalf("AuditKeys %v must be sorted: encoding/json writes map keys in order", AuditKeys)
	}
	type tc struct {
		uid types.UID
		v   Verdict
	}
	cases := map[string]tc{
		"errored":                 {"", *Errored(http.StatusBadRequest, errors.New(`bad "thing" <x> & y`))},
		"allowed":                 {"u", Allowed("")},
		"denied":                  {"u\u2028", Denied("isolator: rule a/b denies this pod: control \x01 and é and \xff")},
		"patch replace":           {"u", Verdict{Allowed: true, PatchOp: "replace", Class: "kata-rc", Rule: "cm/rule", HasAnnotations: true, Warning: "w <b>"}},
		"patch add":               {"u", Verdict{Allowed: true, PatchOp: "add", Class: "ka\"ta", Rule: "cm/r\u00e9", Audit: [NumAuditKeys]string{"set", "", "x", "", "why & how", "cm/rule", "kata-rc"}}},
		"all audit":               {"u", Verdict{Allowed: true, Audit: [NumAuditKeys]string{"a", "b", "c", "d", "e", "f", "g"}}},
		"set, no annotations yet": {"u", Verdict{Allowed: true, PatchOp: "add", Class: "kata-rc", Rule: "platform/untrusted", Audit: [NumAuditKeys]string{"set", "", "", "", "namespace is shop", "platform/untrusted", "kata-rc"}}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			var want bytes.Buffer
			ref := admissionv1.AdmissionReview{TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"}, Response: c.v.response(c.uid)}
			if err := json.NewEncoder(&want).Encode(&ref); err != nil {
				t.Fatal(err)
			}
			if got := AppendReview(nil, c.uid, &c.v); !bytes.Equal(got, want.Bytes()) {
				t.Errorf("AppendReview differs from encoding/json:\n got %s\nwant %s", got, want.Bytes())
			}
		})
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] >= s[i] {
			return false
		}
	}
	return true
}
