package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/testfixtures/samplepod"
	"github.com/isolator-dev/isolator/webhook"
)

// DirectOptions configure the direct HTTPS load.
type DirectOptions struct {
	// URL is the webhook's base URL; empty starts a control plane and a webhook.
	URL string
	// PID is the webhook's process, for its CPU time and RSS; 0 skips them.
	PID int
	// CA is the PEM bundle that signed the serving certificate; nil skips verification.
	CA []byte
	// Namespace is the namespace of the reviewed pod; it must exist in the webhook's
	// cluster.
	Namespace string
	// WantClass is the runtime class the webhook must set on the pod; default kata-rc.
	WantClass   string
	Concurrency []int
	Protocols   []string // "h2", "http/1.1"
	Duration    time.Duration
	Warmup      time.Duration
}

// DirectPhase is one load level.
type DirectPhase struct {
	Protocol    string  `json:"protocol"`
	Concurrency int     `json:"concurrency"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	Seconds     float64 `json:"seconds"`
	RPS         float64 `json:"reviewsPerSecond"`
	P50Ms       float64 `json:"p50Ms"`
	P99Ms       float64 `json:"p99Ms"`
	P999Ms      float64 `json:"p999Ms"`
	MaxMs       float64 `json:"maxMs"`
	// WebhookCPUSeconds is the webhook process's user+system time during the phase;
	// WebhookCPUPerReviewUs divides it by the reviews answered.
	WebhookCPUSeconds     float64 `json:"webhookCPUSeconds"`
	WebhookCPUPerReviewUs float64 `json:"webhookCPUPerReviewUs"`
	WebhookPeakRSSMiB     float64 `json:"webhookPeakRSSMiB"`
	GeneratorCPUSeconds   float64 `json:"generatorCPUSeconds"`
	LoadAverage           string  `json:"loadAverage"`
	FirstError            string  `json:"firstError,omitempty"`
}

// DirectResult is the whole direct run.
type DirectResult struct {
	URL         string        `json:"url"`
	ReviewBytes int           `json:"reviewBytes"`
	Phases      []DirectPhase `json:"phases"`
}

// runDirectWithEnv starts a webhook on e's control plane with the comparison policy,
// and loads it.
func runDirectWithEnv(ctx context.Context, e *env, opts DirectOptions) (*DirectResult, error) {
	iso, cleanup, err := e.startComparisonWebhook(ctx, "isolator-direct")
	if err != nil {
		return nil, err
	}
	defer cleanup()
	opts.URL, opts.PID, opts.CA, opts.Namespace = iso.URL, iso.PID(), iso.CABundle, "perf-direct"
	if _, err := e.cp.CreateNamespace(ctx, opts.Namespace, map[string]string{setupLabel: "isolator"}); err != nil {
		return nil, err
	}
	return runDirect(ctx, opts, e.logf)
}

// startComparisonWebhook runs a webhook (backstop off: see docs/performance.md) with
// the one-rule comparison policy, and returns a function that stops it and removes the
// policy.
func (e *env) startComparisonWebhook(ctx context.Context, name string) (*harness.Isolator, func(), error) {
	if err := e.runtimeClasses(ctx); err != nil {
		return nil, nil, err
	}
	cm, err := policyConfigMap("perf", namespaceRule("sandbox"))
	if err != nil {
		return nil, nil, err
	}
	if err := e.applyConfigMap(ctx, cm); err != nil {
		return nil, nil, err
	}
	e.logf("starting %s", name)
	iso, err := e.startIsolator(ctx, harness.IsolatorOptions{Name: name, Args: []string{"--backstop=false"}})
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() {
		_ = iso.Stop(harness.DefaultStopGrace)
		e.deleteConfigMap(context.WithoutCancel(ctx), "perf")
	}
	if err := waitRules(ctx, iso, 1, time.Minute); err != nil {
		cleanup()
		return nil, nil, err
	}
	return iso, cleanup, nil
}

func runDirect(ctx context.Context, opts DirectOptions, logf func(string, ...any)) (*DirectResult, error) {
	body, err := samplepod.Review(opts.Namespace)
	if err != nil {
		return nil, err
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if opts.CA != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(opts.CA) {
			return nil, errors.New("the CA bundle holds no PEM certificate")
		}
		tlsCfg.RootCAs = pool
	} else {
		tlsCfg.InsecureSkipVerify = true //nolint:gosec // loopback load test of a webhook whose CA was not given
	}
	res := &DirectResult{URL: opts.URL, ReviewBytes: len(body)}
	url := opts.URL + webhook.MutatePath
	// Check once, fully, that the webhook mutates the pod as the policy says: that
	// answer is the reference. The same review gets the same answer byte for byte, so
	// the load checks every answer against it, patch and class included, with one
	// comparison of about a kilobyte.
	if opts.WantClass == "" {
		opts.WantClass = "kata-rc"
	}
	for _, proto := range opts.Protocols {
		want, err := checkReview(ctx, newClient(tlsCfg, proto, 1), url, body, opts.WantClass, proto)
		if err != nil {
			return nil, err
		}
		for _, c := range opts.Concurrency {
			client := newClient(tlsCfg, proto, c)
			logf("direct: %s, concurrency %d, %s (after %s warm-up)", proto, c, opts.Duration, opts.Warmup)
			if opts.Warmup > 0 {
				if _, err := loadPhase(ctx, client, url, body, want, c, opts.Warmup, 0); err != nil {
					return nil, err
				}
			}
			phase, err := loadPhase(ctx, client, url, body, want, c, opts.Duration, opts.PID)
			client.CloseIdleConnections()
			if err != nil {
				return nil, err
			}
			phase.Protocol = proto
			res.Phases = append(res.Phases, *phase)
		}
	}
	return res, nil
}

// newClient keeps connections alive: HTTP/2 multiplexes every worker on one connection
// (as the apiserver's webhook client does), HTTP/1.1 keeps one connection per worker.
func newClient(tlsCfg *tls.Config, proto string, conc int) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     tlsCfg.Clone(),
		MaxIdleConnsPerHost: conc,
		MaxConnsPerHost:     0,
		IdleConnTimeout:     time.Minute,
		ForceAttemptHTTP2:   proto == "h2",
	}
	if proto != "h2" {
		tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// checkReview sends one review over proto, checks that the answer allows the pod with
// exactly the patch isolator makes (one op setting runtimeClassName to class, and
// isolator's annotations naming it), and returns the answer.
func checkReview(ctx context.Context, client *http.Client, url string, body []byte, class, proto string) ([]byte, error) {
	out, major, err := post(ctx, client, url, body, nil)
	if err != nil {
		return nil, err
	}
	if proto == "h2" && major != 2 {
		return nil, fmt.Errorf("the webhook at %s answered over HTTP/1.1, not HTTP/2: was it started with --http2=false?", url)
	}
	var review struct {
		Response struct {
			Allowed bool   `json:"allowed"`
			Patch   []byte `json:"patch"`
		} `json:"response"`
	}
	if err := json.Unmarshal(out, &review); err != nil {
		return nil, fmt.Errorf("the webhook's answer is not an AdmissionReview: %w: %.300s", err, out)
	}
	if !review.Response.Allowed {
		return nil, fmt.Errorf("the webhook did not allow the load's pod: %.500s", out)
	}
	var ops []struct {
		Op    string          `json:"op"`
		Path  string          `json:"path"`
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(review.Response.Patch, &ops); err != nil {
		return nil, fmt.Errorf("the webhook's patch is not a JSON patch: %w: %s", err, review.Response.Patch)
	}
	classOps, annotated := 0, false
	for _, op := range ops {
		switch op.Path {
		case "/spec/runtimeClassName":
			classOps++
			if string(op.Value) != `"`+class+`"` {
				return nil, fmt.Errorf("the webhook set runtimeClassName %s, want %s", op.Value, class)
			}
		case "/metadata/annotations":
			annotated = bytes.Contains(op.Value, []byte(`"isolator.dev/runtime-class":"`+class+`"`))
		case "/metadata/annotations/isolator.dev~1runtime-class":
			annotated = string(op.Value) == `"`+class+`"`
		}
	}
	if classOps != 1 || !annotated {
		return nil, fmt.Errorf("the webhook's patch %s: want one op setting runtimeClassName to %s and isolator's annotation naming it", review.Response.Patch, class)
	}
	return bytes.Clone(out), nil
}

// post sends one review and returns the answer, read into buf.
func post(ctx context.Context, client *http.Client, url string, body []byte, buf *bytes.Buffer) ([]byte, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if buf == nil {
		buf = &bytes.Buffer{}
	}
	buf.Reset()
	if _, err := io.Copy(buf, resp.Body); err != nil {
		return nil, resp.ProtoMajor, err
	}
	if resp.StatusCode != http.StatusOK {
		return buf.Bytes(), resp.ProtoMajor, fmt.Errorf("HTTP %d: %.200s", resp.StatusCode, buf.Bytes())
	}
	return buf.Bytes(), resp.ProtoMajor, nil
}

// loadPhase runs conc workers for d, each sending reviews back to back and checking
// every answer against want.
func loadPhase(ctx context.Context, client *http.Client, url string, body, want []byte, conc int, d time.Duration, pid int) (*DirectPhase, error) {
	var before procStat
	if pid > 0 {
		_ = resetPeakRSS(pid)
		var err error
		if before, err = readProc(pid); err != nil {
			return nil, err
		}
	}
	genBefore := selfCPU()
	start := time.Now()
	deadline := start.Add(d)
	lat := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := &bytes.Buffer{}
			mine := make([]time.Duration, 0, 4096)
			for ctx.Err() == nil {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				out, _, err := post(ctx, client, url, body, buf)
				el := time.Since(t0)
				if err == nil && !bytes.Equal(out, want) {
					err = fmt.Errorf("the answer differs from the verified one (patch and class): %.300s", out)
				}
				if err != nil {
					errs[w]++
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, el)
			}
			lat[w] = mine
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var all []time.Duration
	p := &DirectPhase{Concurrency: conc, Seconds: elapsed.Seconds(), LoadAverage: loadAverage()}
	for w := range conc {
		all = append(all, lat[w]...)
		p.Errors += errs[w]
	}
	if firstErr != nil {
		p.FirstError = firstErr.Error()
	}
	sortDurations(all)
	p.Requests = len(all)
	p.RPS = float64(len(all)) / elapsed.Seconds()
	p.P50Ms, p.P99Ms, p.P999Ms = ms(percentile(all, 50)), ms(percentile(all, 99)), ms(percentile(all, 99.9))
	if len(all) > 0 {
		p.MaxMs = ms(all[len(all)-1])
	}
	p.GeneratorCPUSeconds = (selfCPU() - genBefore).Seconds()
	if pid > 0 {
		after, err := readProc(pid)
		if err != nil {
			return nil, err
		}
		p.WebhookCPUSeconds = (after.cpu - before.cpu).Seconds()
		if p.Requests > 0 {
			p.WebhookCPUPerReviewUs = p.WebhookCPUSeconds * 1e6 / float64(p.Requests)
		}
		p.WebhookPeakRSSMiB = float64(after.peak) / (1 << 20)
	}
	return p, nil
}
