//go:build e2e

package faults

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// On SIGTERM the webhook turns unready first, keeps answering while endpoints drain,
// lets every admission in flight finish, and exits within 10 s.
func TestGracefulShutdown(t *testing.T) {
	ctx := testContext(t)
	iso, err := cp.StartIsolator(ctx, harness.IsolatorOptions{Name: "isolator-shutdown", CertDir: certDir, Args: []string{"--shutdown-delay=1s"}})
	if err != nil {
		t.Fatal(err)
	}
	root, err := harness.ManifestsDir()
	if err != nil {
		t.Fatal(err)
	}
	review, err := os.ReadFile(filepath.Join(filepath.Dir(root), "webhook", "testdata", "admission", "set-untrusted-namespace.json"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}

	// Clients keep sending admissions. A request may fail to connect once the server
	// has closed its listener, which a client (the apiserver) handles by going to
	// another endpoint; a request that was accepted must be answered.
	var answered, refused atomic.Int64
	var mu sync.Mutex
	var broken []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Post(iso.URL+"/mutate-pods", "application/json", bytes.NewReader(review))
				if err != nil {
					var op *net.OpError
					if errors.As(err, &op) && op.Op == "dial" {
						refused.Add(1)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					mu.Lock()
					broken = append(broken, err.Error())
					mu.Unlock()
					continue
				}
				body, err := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"allowed":true`)) {
					mu.Lock()
					broken = append(broken, resp.Status+": "+string(body))
					mu.Unlock()
					continue
				}
				answered.Add(1)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	if err := syscall.Kill(iso.PID(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var unreadyAfter time.Duration
	for unreadyAfter == 0 && time.Since(start) < 2*time.Second {
		resp, err := http.Get(iso.HealthURL + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				unreadyAfter = time.Since(start)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-iso.Done():
	case <-time.After(10 * time.Second):
		t.Errorf("the webhook was still running 10s after SIGTERM")
	}
	exitedAfter := time.Since(start)
	close(stop)
	wg.Wait()
	t.Logf("unready %v after SIGTERM, exited after %v; %d admissions answered, %d connections refused after the listener closed, %d broken",
		unreadyAfter, exitedAfter.Round(time.Millisecond), answered.Load(), refused.Load(), len(broken))
	if unreadyAfter == 0 || unreadyAfter > time.Second {
		t.Errorf("readiness did not turn false promptly after SIGTERM (%v)", unreadyAfter)
	}
	if exitedAfter < time.Second {
		t.Errorf("exited %v after SIGTERM, before the 1s shutdown delay: endpoints would not have drained", exitedAfter)
	}
	if len(broken) > 0 {
		t.Errorf("%d admissions in flight were not answered, e.g. %s", len(broken), broken[0])
	}
	if answered.Load() == 0 {
		t.Error("no admission was answered: the load never ran")
	}
}

// A rollout loses no admission because the webhook speaks HTTP/2: on shutdown its
// GOAWAY tells the apiserver which requests to send again, whereas over HTTP/1.1 a
// request that races the close of an idle keep-alive connection fails
// (docs/performance.md). So the webhook offers h2 through ALPN by default, and HTTP/1.1
// only with --http2=false.
func TestHTTP2Offered(t *testing.T) {
	ctx := testContext(t)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"isolator-alpn-default", nil, "h2"},
		{"isolator-alpn-http1", []string{"--http2=false"}, "http/1.1"},
	} {
		iso, err := cp.StartIsolator(ctx, harness.IsolatorOptions{Name: c.name, CertDir: certDir, Args: c.args})
		if err != nil {
			t.Fatal(err)
		}
		d := &tls.Dialer{Config: &tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}}}
		conn, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(iso.URL, "https://"))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol
		_ = conn.Close()
		_ = iso.Stop(harness.DefaultStopGrace)
		if got != c.want {
			t.Errorf("webhook %v negotiated %q with a client offering h2 and http/1.1, want %q", c.args, got, c.want)
		}
	}
}
