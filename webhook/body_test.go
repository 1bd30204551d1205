package webhook

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// largeReview is a valid AdmissionReview of a pod whose annotations make it larger than
// smallBody, as a pod with a big ConfigMap-like annotation is.
func largeReview(t *testing.T) []byte {
	t.Helper()
	body, err := os.ReadFile("testdata/admission/set-runc-platform-images.json")
	if err != nil {
		t.Fatal(err)
	}
	pad := `"metadata": {"annotations": {"pad": "` + strings.Repeat("x", 2*smallBody) + `"},`
	out := bytes.Replace(body, []byte(`"metadata": {`), []byte(pad), 1)
	if len(out) <= 2*smallBody {
		t.Fatal("the padded review is not large")
	}
	return out
}

// TestLargeBodiesWaitForASlot: past 64 KiB a body is read only while it holds one of
// the large-body slots. A request that finds them taken until its read deadline is not
// answered (503), so that the apiserver fails open to the backstop rather than reading
// a refusal; once a slot is free, the same request is decided.
func TestLargeBodiesWaitForASlot(t *testing.T) {
	mut, m := testMutator(t)
	mut.LargeBodySlots = make(chan struct{}, 1)
	mut.BodyReadTimeout = 100 * time.Millisecond
	body := largeReview(t)
	mut.LargeBodySlots <- struct{}{} // another large body is being read
	rec := serve(mut, body)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "too many large admission requests") {
		t.Errorf("with every slot taken: HTTP %d %q, want 503", rec.Code, rec.Body.String())
	}
	if got := testutil.ToFloat64(m.Shed.WithLabelValues(shedBusy)); got != 1 {
		t.Errorf("shed busy = %v, want 1", got)
	}
	<-mut.LargeBodySlots
	rec = serve(mut, body)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"allowed":true`) {
		t.Errorf("with a free slot: HTTP %d %.200s, want the decision", rec.Code, rec.Body.String())
	}
	if len(mut.LargeBodySlots) != 0 {
		t.Error("the slot was not given back")
	}
	// Small bodies never need a slot.
	mut.LargeBodySlots <- struct{}{}
	small, err := os.ReadFile("testdata/admission/set-runc-platform-images.json")
	if err != nil {
		t.Fatal(err)
	}
	if rec := serve(mut, small); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"allowed":true`) {
		t.Errorf("a small body with every slot taken: HTTP %d %.200s, want the decision", rec.Code, rec.Body.String())
	}
}

// TestDeclaredTooLarge: a body that says it is over the cap is refused before a byte
// of it is read.
func TestDeclaredTooLarge(t *testing.T) {
	mut, m := testMutator(t)
	req := httptest.NewRequest(http.MethodPost, MutatePath, io.NopCloser(neverReader{}))
	req.Header.Set("Content-Type", "application/json")
	req.ContentLength = MaxReviewBytes + 1
	rec := httptest.NewRecorder()
	mut.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"code":413`) {
		t.Errorf("HTTP %d %q, want a 413 AdmissionReview", rec.Code, rec.Body.String())
	}
	if got := testutil.ToFloat64(m.Shed.WithLabelValues(shedTooLarge)); got != 1 {
		t.Errorf("shed too_large = %v, want 1", got)
	}
}

type neverReader struct{}

func (neverReader) Read([]byte) (int, error) { panic("read a body declared too large") }

// TestSlowBodyIsCutOff: a client that sends part of its body and stalls is cut off at
// the read deadline, over a real connection.
func TestSlowBodyIsCutOff(t *testing.T) {
	mut, m := testMutator(t)
	mut.BodyReadTimeout = 200 * time.Millisecond
	srv := httptest.NewServer(mut)
	defer srv.Close()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := largeReview(t)
	head := "POST " + MutatePath + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), body[:len(body)/2]...)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("no answer within 5s to a body stalled halfway: %v", err)
	}
	if !strings.HasPrefix(string(resp), "HTTP/1.1 408") {
		t.Errorf("answer %.100q, want HTTP 408", resp)
	}
	if got := testutil.ToFloat64(m.Shed.WithLabelValues(shedSlow)); got != 1 {
		t.Errorf("shed slow = %v, want 1", got)
	}
	if len(mut.slots()) != 0 {
		t.Error("the large-body slot was not given back")
	}
}
