// Command perf measures isolator's admission performance on a real control plane and
// prints the numbers as JSON (stdout) and as a readable summary (stderr):
//
//	go run ./e2e/perf direct       AdmissionReview load over HTTPS at several concurrencies
//	go run ./e2e/perf apiserver    pod creates through kube-apiserver: no mutation, a
//	                               MutatingAdmissionPolicy, and isolator, interleaved
//	go run ./e2e/perf memory       the webhook's RSS with many namespaces and rules
//	go run ./e2e/perf propagation  time from a policy ConfigMap update to every replica
//	go run ./e2e/perf all          each of them on one control plane
//
// Each starts etcd, kube-apiserver and kube-controller-manager through e2e/harness
// (built by `make tools`) and the isolator binary ($ISOLATOR_BIN, from `make build`);
// `direct --url URL --pid PID` loads a webhook that is already running instead.
// `make perf` runs them all; docs/performance.md records the results.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "perf: %v\n", err)
		os.Exit(1)
	}
}

// Report is everything one run measured, with the machine it ran on.
type Report struct {
	Date        string             `json:"date"`
	Command     string             `json:"command"`
	Machine     Machine            `json:"machine"`
	WebhookEnv  []string           `json:"webhookEnv,omitempty"`
	WebhookArgs []string           `json:"webhookArgs,omitempty"`
	Direct      *DirectResult      `json:"direct,omitempty"`
	APIServer   *APIServerResult   `json:"apiserver,omitempty"`
	Memory      *MemoryResult      `json:"memory,omitempty"`
	Propagation *PropagationResult `json:"propagation,omitempty"`
}

// Machine describes where the numbers come from.
type Machine struct {
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpuModel"`
	LoadAverage string `json:"loadAverage"`
	GoVersion   string `json:"goVersion"`
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), LoadAverage: loadAverage(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

const usage = `usage: perf direct|apiserver|memory|propagation|all [flags]

Run "perf <mode> -h" for the flags of a mode.`

// options are every mode's flags; each mode reads its own.
type options struct {
	direct      DirectOptions
	apiserver   APIServerOptions
	memory      MemoryOptions
	propagation PropagationOptions
	output      string
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, usage)
		return errors.New("a mode is required")
	}
	mode := args[0]
	fs := flag.NewFlagSet("perf "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	var conc, protos, reinv, caFile, compareBackstop string
	switch mode {
	case "direct", "all":
		fs.StringVar(&o.direct.URL, "url", "", "base URL of a running webhook (https://host:port); empty starts a control plane and a webhook")
		fs.IntVar(&o.direct.PID, "pid", 0, "process ID of the webhook at --url, for its CPU time and peak RSS")
		fs.StringVar(&caFile, "ca", "", "PEM CA bundle of the webhook at --url; empty skips verification")
		fs.StringVar(&o.direct.Namespace, "namespace", "perf-direct", "namespace of the reviewed pod, for --url (it must exist there)")
		fs.StringVar(&conc, "concurrency", "1,8,64", "comma-separated numbers of concurrent clients")
		fs.StringVar(&protos, "protocols", "h2,http/1.1", "comma-separated protocols: h2 (what the apiserver speaks), http/1.1")
		fs.DurationVar(&o.direct.Duration, "duration", 10*time.Second, "length of each load phase")
		fs.DurationVar(&o.direct.Warmup, "warmup", 2*time.Second, "unmeasured load before each phase")
	}
	switch mode {
	case "apiserver", "all":
		fs.IntVar(&o.apiserver.Pods, "pods", 300, "pods each setup creates per reinvocation policy")
		fs.IntVar(&o.apiserver.Warmup, "warmup-pods", 20, "unmeasured pods per setup first")
		fs.StringVar(&reinv, "reinvocation", "IfNeeded,Never", "reinvocation policies to measure")
		fs.StringVar(&compareBackstop, "compare-backstop", "both", "isolator setups to measure: off (the webhook alone), on (as installed, with the backstop ValidatingAdmissionPolicy) or both")
	}
	switch mode {
	case "memory", "all":
		fs.IntVar(&o.memory.Namespaces, "namespaces", 10000, "namespaces in the cluster")
		fs.IntVar(&o.memory.Rules, "rules", 1000, "rules in the generated policy ConfigMap")
		fs.BoolVar(&o.memory.Backstop, "backstop", true, "run the webhook with its backstop, as installed by default")
		fs.DurationVar(&o.memory.Load, "load", 5*time.Second, "review load before reading the RSS")
		fs.StringVar(&o.memory.GoMemLimit, "gomemlimit", "manifest", "GOMEMLIMIT for the webhook, e.g. 40MiB: \"manifest\" reads it from the webhook Deployment in manifests/base, as installed; \"none\" runs without one")
	}
	switch mode {
	case "propagation", "all":
		fs.IntVar(&o.propagation.Replicas, "replicas", 3, "webhook replicas")
		fs.IntVar(&o.propagation.Updates, "updates", 10, "ConfigMap updates to time")
		fs.DurationVar(&o.propagation.Poll, "poll", 5*time.Millisecond, "how often each replica is asked while an update propagates")
	}
	switch mode {
	case "direct", "apiserver", "memory", "propagation", "all":
	default:
		fmt.Fprintln(stderr, usage)
		return fmt.Errorf("unknown mode %q", mode)
	}
	fs.StringVar(&o.output, "o", "", "also write the JSON report to this file")
	var webhookEnv, webhookArgs string
	fs.StringVar(&webhookEnv, "webhook-env", "", "comma-separated KEY=VALUE added to each webhook's environment, e.g. GOMEMLIMIT=40MiB,GOGC=200")
	fs.StringVar(&webhookArgs, "webhook-args", "", "comma-separated flags added to each webhook started, e.g. --http2=false")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	var err error
	if o.direct.Concurrency, err = intList(conc); err != nil {
		return fmt.Errorf("--concurrency: %w", err)
	}
	if protos != "" {
		o.direct.Protocols = strings.Split(protos, ",")
		for _, p := range o.direct.Protocols {
			if p != "h2" && p != "http/1.1" {
				return fmt.Errorf("--protocols: %q is neither h2 nor http/1.1", p)
			}
		}
	}
	for _, r := range strings.Split(reinv, ",") {
		if r == "" {
			continue
		}
		rp := admissionregistrationv1.ReinvocationPolicyType(r)
		if rp != admissionregistrationv1.IfNeededReinvocationPolicy && rp != admissionregistrationv1.NeverReinvocationPolicy {
			return fmt.Errorf("--reinvocation: %q is neither IfNeeded nor Never", r)
		}
		o.apiserver.Reinvocation = append(o.apiserver.Reinvocation, rp)
	}
	switch compareBackstop {
	case "", "both":
	case "on":
		o.apiserver.Backstop = []bool{true}
	case "off":
		o.apiserver.Backstop = []bool{false}
	default:
		return fmt.Errorf("--compare-backstop: %q is not off, on or both", compareBackstop)
	}
	switch o.memory.GoMemLimit {
	case "manifest":
		if o.memory.GoMemLimit, err = harness.ManifestEnv("GOMEMLIMIT"); err != nil {
			return fmt.Errorf("--gomemlimit: %w", err)
		}
	case "none":
		o.memory.GoMemLimit = ""
	}
	if caFile != "" {
		if o.direct.CA, err = os.ReadFile(caFile); err != nil {
			return fmt.Errorf("--ca: %w", err)
		}
	}
	var envVars []string
	for _, kv := range strings.Split(webhookEnv, ",") {
		if kv == "" {
			continue
		}
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return fmt.Errorf("--webhook-env: %q is not KEY=VALUE", kv)
		}
		envVars = append(envVars, kv)
	}
	logf := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Command: "go run ./e2e/perf " + strings.Join(args, " "), Machine: machine()}
	if mode == "direct" && o.direct.URL != "" {
		if rep.Direct, err = runDirect(ctx, o.direct, logf); err != nil {
			return err
		}
	} else {
		e, err := startEnv(ctx, logf)
		if err != nil {
			return err
		}
		defer func() { _ = e.cp.Stop() }()
		e.webhookEnv = envVars
		rep.WebhookEnv = envVars
		for _, a := range strings.Split(webhookArgs, ",") {
			if a != "" {
				e.webhookArgs = append(e.webhookArgs, a)
			}
		}
		rep.WebhookArgs = e.webhookArgs
		if err := measure(ctx, e, mode, o, rep); err != nil {
			return err
		}
	}
	return report(rep, o.output, stdout, stderr)
}

// measure runs mode's measurements on e's control plane, filling rep.
func measure(ctx context.Context, e *env, mode string, o options, rep *Report) error {
	var err error
	if mode == "direct" || mode == "all" {
		if rep.Direct, err = runDirectWithEnv(ctx, e, o.direct); err != nil {
			return fmt.Errorf("direct: %w", err)
		}
	}
	if mode == "apiserver" || mode == "all" {
		if rep.APIServer, err = runAPIServer(ctx, e, o.apiserver); err != nil {
			return fmt.Errorf("apiserver: %w", err)
		}
	}
	if mode == "propagation" || mode == "all" {
		if rep.Propagation, err = runPropagation(ctx, e, o.propagation); err != nil {
			return fmt.Errorf("propagation: %w", err)
		}
	}
	// Last: its namespaces stay in the cluster.
	if mode == "memory" || mode == "all" {
		if rep.Memory, err = runMemory(ctx, e, o.memory); err != nil {
			return fmt.Errorf("memory: %w", err)
		}
	}
	return nil
}

func intList(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func report(rep *Report, path string, stdout, stderr io.Writer) error {
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path != "" {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return err
		}
	}
	if _, err := stdout.Write(b); err != nil {
		return err
	}
	summary(rep, stderr)
	return nil
}

// summary prints the report for a person.
func summary(rep *Report, w io.Writer) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("\n%s  %d CPUs (%s), load average %s, %s", rep.Date, rep.Machine.CPUs, rep.Machine.CPUModel, rep.Machine.LoadAverage, rep.Machine.GoVersion)
	p("%s", rep.Command)
	if len(rep.WebhookArgs) > 0 {
		p("webhook flags added: %s", strings.Join(rep.WebhookArgs, " "))
	}
	if len(rep.WebhookEnv) > 0 {
		p("webhook environment: %s", strings.Join(rep.WebhookEnv, " "))
	}
	if d := rep.Direct; d != nil {
		p("\nDirect HTTPS load (%d-byte AdmissionReview of a 10-container pod)", d.ReviewBytes)
		p("%-9s %5s %9s %8s %8s %8s %7s %10s %9s %9s  %s", "protocol", "conc", "reviews/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "wh CPU s", "µs/review", "peak RSS", "load avg")
		for _, ph := range d.Phases {
			p("%-9s %5d %9.0f %8.2f %8.2f %8.2f %7d %10.2f %9.1f %8.1fM  %s", ph.Protocol, ph.Concurrency, ph.RPS, ph.P50Ms, ph.P99Ms, ph.P999Ms,
				ph.Errors, ph.WebhookCPUSeconds, ph.WebhookCPUPerReviewUs, ph.WebhookPeakRSSMiB, ph.LoadAverage)
		}
	}
	if a := rep.APIServer; a != nil {
		p("\nPod create through kube-apiserver (webhook over %s, %d connection(s))", a.WebhookProtocol, a.WebhookConnections)
		for _, r := range a.Runs {
			what := "the webhook alone"
			if r.Backstop {
				what = "as installed: the webhook and the backstop ValidatingAdmissionPolicy"
			}
			p("isolator %s; reinvocationPolicy %s (isolator calls per pod %.2f, load avg %s)", what, r.Reinvocation, r.WebhookCallsPerPod, r.LoadAverage)
			p("  mean per call: apiserver -> isolator %.2f ms (isolator's handler %.3f ms, its decision %.3f ms); MutatingAdmissionPolicy evaluation %.2f ms",
				r.APIServerWebhookCallMs, r.WebhookHandlerMs, r.WebhookDecisionMs, r.MAPEvaluationMs)
			p("  %-9s %5s %8s %8s %8s %10s %10s", "setup", "pods", "p50 ms", "p99 ms", "mean ms", "+p50 ms", "+p99 ms")
			for _, s := range r.Setups {
				p("  %-9s %5d %8.2f %8.2f %8.2f %10.2f %10.2f", s.Setup, s.Pods, s.P50Ms, s.P99Ms, s.MeanMs, s.AddedP50Ms, s.AddedP99Ms)
			}
			p("  isolator / MutatingAdmissionPolicy added latency: p50 %.2f, p99 %.2f (target <= 1.0)", r.RatioP50, r.RatioP99)
		}
	}
	if m := rep.Memory; m != nil {
		limit := m.GoMemLimit
		if limit == "" {
			limit = "unset"
		}
		p("\nMemory: %d namespaces, %d rules, backstop %v, GOMEMLIMIT %s: RSS %.1f MiB (%.1f MiB anonymous), peak %.1f MiB; Go heap in use %.1f MiB, Go sys %.1f MiB; ready in %.1fs",
			m.Namespaces, m.Rules, m.Backstop, limit, m.RSSMiB, m.AnonMiB, m.PeakRSSMiB, m.HeapInuseMiB, m.GoSysMiB, m.ReadySeconds)
	}
	if pr := rep.Propagation; pr != nil {
		p("\nPolicy propagation to %d replicas over %d updates: p50 %.1f ms, max %.1f ms (target <= 1000 ms)", pr.Replicas, len(pr.Updates), pr.P50AllMs, pr.MaxAllMs)
	}
}
