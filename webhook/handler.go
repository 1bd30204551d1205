package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/isolator-dev/isolator/webhook/admissionwire"
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

// ServeHTTP serves /mutate-pods. It is controller-runtime's admission protocol (the same
// size cap, content-type check, panic recovery and error responses, and
// controller_runtime_webhook_* metrics through the webhook server), with a decoder that
// reads only what the decision needs, once, and a response written straight to bytes.
func (m *PodMutator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var uid types.UID
	defer func() {
		if p := recover(); p != nil {
			ctrl.LoggerFrom(r.Context()).Error(fmt.Errorf("panic: %v", p), "admission handler panicked")
			admissionwire.WriteReview(w, uid, admissionwire.Errored(http.StatusInternalServerError, fmt.Errorf("panic: %v [recovered]", p)))
		}
	}()
	if r.Body == nil || r.Body == http.NoBody {
		admissionwire.WriteReview(w, "", admissionwire.Errored(http.StatusBadRequest, errors.New("request body is empty")))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		admissionwire.WriteReview(w, "", admissionwire.Errored(http.StatusBadRequest, fmt.Errorf("contentType=%s, expected application/json", ct)))
		return
	}
	if r.ContentLength > MaxReviewBytes {
		m.shed(shedTooLarge)
		admissionwire.WriteReview(w, "", admissionwire.Errored(http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", MaxReviewBytes)))
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
	buf := admissionwire.GetBuf()
	defer admissionwire.PutBuf(buf)
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
		admissionwire.WriteReview(w, "", admissionwire.Errored(http.StatusBadRequest, fmt.Errorf("reading the request body: %w", err)))
		return
	}
	if len(body) > MaxReviewBytes {
		m.shed(shedTooLarge)
		admissionwire.WriteReview(w, "", admissionwire.Errored(http.StatusRequestEntityTooLarge, fmt.Errorf("request entity is too large; limit is %d bytes", MaxReviewBytes)))
		return
	}
	review, err := admissionwire.Decode(body)
	if err != nil {
		admissionwire.WriteReview(w, "", admissionwire.Errored(http.StatusBadRequest, fmt.Errorf("the body is not an AdmissionReview of a Pod: %w", err)))
		return
	}
	if review.Request == nil {
		admissionwire.WriteReview(w, "", admissionwire.Errored(http.StatusBadRequest, errors.New("the body is not an AdmissionReview with a request: expected apiVersion admission.k8s.io/v1, kind AdmissionReview")))
		return
	}
	uid = review.Request.UID
	if review.APIVersion != admissionwire.ReviewType.APIVersion || review.Kind != admissionwire.ReviewType.Kind {
		admissionwire.WriteReview(w, uid, admissionwire.Errored(http.StatusBadRequest, fmt.Errorf("expected apiVersion %s, kind AdmissionReview; got apiVersion %q, kind %q: list only v1 in admissionReviewVersions", admissionwire.ReviewType.APIVersion, review.APIVersion, review.Kind)))
		return
	}
	v := m.decide(r.Context(), review.Request)
	admissionwire.WriteReview(w, uid, &v)
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
