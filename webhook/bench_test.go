package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/isolator-dev/isolator/internal/testfixtures/samplepod"
	"github.com/isolator-dev/isolator/policy"

	"github.com/isolator-dev/isolator/webhook/admissionwire"
)

// benchReview is the AdmissionReview of samplepod.Pod in a sandboxed namespace.
func benchReview(tb testing.TB) []byte {
	tb.Helper()
	b, err := samplepod.Review("shop")
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// reportCPU adds cpu-ns/op: the process's CPU time (user + system, all threads, so GC
// included) per operation. On a machine shared with other work, wall-clock ns/op
// includes the time the benchmark waited for a core; CPU time does not.
func reportCPU(b *testing.B, loop func()) {
	b.Helper()
	before := cpuTime()
	loop()
	if b.N > 0 {
		b.ReportMetric(float64((cpuTime()-before).Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkHandler measures one admission in process: read the body, decode the
// AdmissionReview, decide, write the response, through PodMutator.ServeHTTP.
func BenchmarkHandler(b *testing.B) {
	mut, _ := testMutator(b)
	body := benchReview(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	req := httptest.NewRequest(http.MethodPost, MutatePath, nil)
	req.Header.Set("Content-Type", "application/json")
	rd := bytes.NewReader(body)
	req.Body = readCloser{rd}
	w := &discardResponse{header: http.Header{}}
	reportCPU(b, func() {
		for b.Loop() {
			rd.Reset(body)
			w.code = 0
			mut.ServeHTTP(w, req)
			if w.code != http.StatusOK || w.n < 200 {
				b.Fatalf("HTTP %d, %d bytes", w.code, w.n)
			}
		}
	})
}

// BenchmarkDecodeReview compares the decoder with encoding/json, its reference.
func BenchmarkDecodeReview(b *testing.B) {
	body := benchReview(b)
	for _, c := range []struct {
		name   string
		decode func([]byte) (admissionwire.Review, error)
	}{
		{"decoder=fast", admissionwire.Decode},
		{"decoder=encoding-json", func(body []byte) (r admissionwire.Review, err error) { return r, json.Unmarshal(body, &r) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			reportCPU(b, func() {
				for b.Loop() {
					r, err := c.decode(body)
					if err != nil || r.Request == nil || len(r.Request.Object.Spec.Containers) != 10 {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkNormalizeImageCached is the path admissions take: a hit in the webhook's
// image cache (policy.BenchmarkNormalizeImage measures a miss, a full parse).
func BenchmarkNormalizeImageCached(b *testing.B) {
	c := policy.NewImageCache(100)
	ref := "registry.example.com/team-3/web:1.4.2"
	if _, err := c.Normalize(ref); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	reportCPU(b, func() {
		for b.Loop() {
			if _, err := c.Normalize(ref); err != nil {
				b.Fatal(err)
			}
		}
	})
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// discardResponse is an http.ResponseWriter that keeps only the status and size, so
// that the benchmark measures the handler rather than a recorder's copying.
type discardResponse struct {
	header http.Header
	code   int
	n      int
}

func (w *discardResponse) Header() http.Header { return w.header }

func (w *discardResponse) WriteHeader(code int) { w.code = code }

func (w *discardResponse) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	w.n = len(p)
	return len(p), nil
}

// BenchmarkHandlerHTTPS is one admission over a real TLS connection, client and server
// in this process, so its cpu-ns/op counts both sides. It shows what the protocol
// stack adds to the handler: HTTP/2, what the apiserver speaks to isolator by default,
// and HTTP/1.1 with keep-alive (isolator webhook --http2=false).
func BenchmarkHandlerHTTPS(b *testing.B) {
	for _, proto := range []struct {
		name  string
		major int
	}{{"http1.1", 1}, {"h2", 2}} {
		b.Run("proto="+proto.name, func(b *testing.B) { benchHTTPS(b, proto.major) })
	}
}

func benchHTTPS(b *testing.B, major int) {
	mut, _ := testMutator(b)
	body := benchReview(b)
	srv := httptest.NewUnstartedServer(mut)
	srv.EnableHTTP2 = major == 2
	srv.StartTLS()
	defer srv.Close()
	client := srv.Client()
	// Keep a connection per client goroutine alive, as the apiserver's pool does.
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	url := srv.URL + MutatePath
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.SetParallelism(4)
	reportCPU(b, func() {
		b.RunParallel(func(pb *testing.PB) {
			var out bytes.Buffer
			for pb.Next() {
				req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				if err != nil {
					b.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				out.Reset()
				_, err = out.ReadFrom(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || resp.ProtoMajor != major {
					b.Fatalf("HTTP %d over %s: %v", resp.StatusCode, resp.Proto, err)
				}
			}
		})
	})
}
