//go:build e2e

package faults

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// Slow-body attack, as an outside red team ran it: attackers open TLS connections to
// the webhook port, each declares a 7 MB AdmissionReview, sends 4.3 MB of it and stalls.
const (
	attackers      = 40
	attackDeclared = 7_000_000
	attackSent     = 4_300_000
	// memoryBound is the peak RSS the webhook must stay under: the Deployment's memory
	// limit is 256Mi, and the margin is for everything else a replica holds (informers
	// of a large cluster, many policies).
	memoryBound = 128 << 20
)

// TestSlowBodies: under the attack the webhook's memory stays bounded (at most
// LargeBodies bodies over 64 KiB are read at once, and each body must arrive within the
// read timeout), it keeps answering ordinary reviews, and it cuts the attackers off.
// The replica runs with the manifest's GOMEMLIMIT, as installed.
func TestSlowBodies(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t)
	limit, err := harness.ManifestEnv("GOMEMLIMIT")
	if err != nil {
		t.Fatal(err)
	}
	iso, err := cp.StartIsolator(ctx, harness.IsolatorOptions{Name: "slow-bodies", CertDir: certDir, Env: []string{"GOMEMLIMIT=" + limit}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iso.Stop(10 * time.Second) })
	host := strings.TrimPrefix(iso.URL, "https://")
	tlsConf := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a test client of a test server
	idle := rss(t, iso.PID())

	var peak int64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := rss(t, iso.PID()); v > peak {
				peak = v
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()

	var wg sync.WaitGroup
	answers := make([]string, attackers)
	chunk := bytes.Repeat([]byte(" "), 64<<10)
	for i := range attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := tls.Dial("tcp", host, tlsConf)
			if err != nil {
				answers[i] = "dial: " + err.Error()
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "POST /mutate-pods HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", host, attackDeclared)
			for sent := 1; sent < attackSent; sent += len(chunk) {
				if _, err := conn.Write(chunk[:min(len(chunk), attackSent-sent)]); err != nil {
					break // the webhook stopped reading: what the bounds are for
				}
			}
			// Stall, and wait for the webhook to give up on this body.
			_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			line, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				answers[i] = "no answer: " + err.Error()
				return
			}
			answers[i] = strings.TrimSpace(line)
		}()
	}
	// While the attack lasts, an ordinary review is answered at once.
	time.Sleep(2 * time.Second)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf, ForceAttemptHTTP2: true}, Timeout: 5 * time.Second}
	start := time.Now()
	resp, err := client.Post(iso.URL+"/mutate-pods", "application/json", strings.NewReader(ordinaryReview))
	if err != nil {
		t.Fatalf("an ordinary review during the attack: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"allowed":true`) || !strings.Contains(string(body), `"patch"`) {
		t.Errorf("an ordinary review during the attack: HTTP %d %.300s", resp.StatusCode, body)
	}
	t.Logf("an ordinary review during the attack was answered in %v", time.Since(start).Round(time.Millisecond))
	wg.Wait()
	close(stopSampling)
	<-sampled
	hwm := statusField(t, iso.PID(), "VmHWM")
	cutOff := 0
	for _, a := range answers {
		if strings.HasPrefix(a, "HTTP/1.1 408") || strings.HasPrefix(a, "HTTP/1.1 503") {
			cutOff++
		}
	}
	t.Logf("%d attackers (%d of %d bytes each, then stalled): RSS idle %.1f MiB, peak sampled %.1f MiB, VmHWM %.1f MiB; %d cut off with 408 or 503; GOMEMLIMIT=%s",
		attackers, attackSent, attackDeclared, mib(idle), mib(peak), mib(hwm), cutOff, limit)
	if hwm > memoryBound {
		t.Errorf("peak RSS %.1f MiB under the attack, over the %d MiB bound", mib(hwm), memoryBound>>20)
	}
	if cutOff != attackers {
		t.Errorf("%d of %d attackers were cut off with 408 or 503; answers: %q", cutOff, attackers, answers)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func rss(t *testing.T, pid int) int64 { return statusField(t, pid, "VmRSS") }

// statusField reads a memory field of /proc/<pid>/status, in bytes.
func statusField(t *testing.T, pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Errorf("reading the webhook's memory: %v", err)
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Errorf("%s: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Errorf("no %s in /proc/%d/status", field, pid)
	return 0
}

// ordinaryReview is a pod the example policies send to runc-rc.
const ordinaryReview = `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",` +
	`"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"payments","operation":"CREATE",` +
	`"object":{"metadata":{"name":"ledger","namespace":"payments"},"spec":{"containers":[{"name":"app","image":"registry.example.com/platform/ledger:2"}]}}}}`
