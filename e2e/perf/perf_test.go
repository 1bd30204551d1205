//go:build e2e

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
)

// TestSmoke runs every measurement of the load tool for a few seconds on one control
// plane, so that the tool keeps working; `make perf` runs the real measurements. It
// checks the shape of the report and what must hold whatever the machine's speed: no
// failed reviews, every pod mutated as its setup says, and the apiserver calling
// isolator twice per kata pod with reinvocationPolicy IfNeeded and once with Never.
func TestSmoke(t *testing.T) {
	cp := harness.StartForTest(t, harness.Options{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	e, err := newEnv(ctx, cp, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	limit, err := harness.ManifestEnv("GOMEMLIMIT")
	if err != nil {
		t.Fatal(err)
	}
	rep := &Report{Date: time.Now().UTC().Format(time.RFC3339), Command: "TestSmoke", Machine: machine()}
	o := options{
		direct: DirectOptions{Concurrency: []int{1, 4}, Protocols: []string{"h2", "http/1.1"}, Duration: time.Second},
		apiserver: APIServerOptions{Pods: 5, Warmup: 1,
			Reinvocation: []admissionregistrationv1.ReinvocationPolicyType{admissionregistrationv1.IfNeededReinvocationPolicy, admissionregistrationv1.NeverReinvocationPolicy}},
		memory:      MemoryOptions{Namespaces: 30, Rules: 50, Backstop: true, Load: time.Second, GoMemLimit: limit},
		propagation: PropagationOptions{Replicas: 2, Updates: 2, Poll: 5 * time.Millisecond},
	}
	if err := measure(ctx, e, "all", o, rep); err != nil {
		t.Fatal(err)
	}
	var out, summaryText bytes.Buffer
	if err := report(rep, "", &out, &summaryText); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", summaryText.String())

	var decoded map[string]any
	if err := json.Unmarshal(out.Bytes(), &decoded); err != nil {
		t.Fatalf("the report is not JSON: %v", err)
	}
	for _, k := range []string{"date", "command", "machine", "direct", "apiserver", "memory", "propagation"} {
		if _, ok := decoded[k]; !ok {
			t.Errorf("the JSON report has no %q", k)
		}
	}
	for _, want := range []string{"Direct HTTPS load", "Pod create through kube-apiserver", "Memory:", "Policy propagation"} {
		if !strings.Contains(summaryText.String(), want) {
			t.Errorf("the summary has no %q section", want)
		}
	}

	if got := len(rep.Direct.Phases); got != 4 {
		t.Errorf("direct: %d phases, want 4 (2 protocols x 2 concurrencies)", got)
	}
	for _, ph := range rep.Direct.Phases {
		if ph.Requests == 0 || ph.Errors != 0 || ph.RPS <= 0 || ph.P50Ms <= 0 || ph.P99Ms < ph.P50Ms || ph.WebhookPeakRSSMiB <= 0 {
			t.Errorf("direct %s c=%d: %+v", ph.Protocol, ph.Concurrency, ph)
		}
	}

	if rep.APIServer.WebhookProtocol == "" || rep.APIServer.WebhookConnections < 1 {
		t.Errorf("apiserver: protocol %q over %d connections", rep.APIServer.WebhookProtocol, rep.APIServer.WebhookConnections)
	}
	wantCalls := map[string]float64{"IfNeeded": 2, "Never": 1}
	if len(rep.APIServer.Runs) != 4 {
		t.Fatalf("apiserver: %d runs, want 4 (2 reinvocation policies, the webhook alone and as installed)", len(rep.APIServer.Runs))
	}
	if rep.APIServer.Runs[0].Backstop || !rep.APIServer.Runs[2].Backstop {
		t.Errorf("apiserver: runs %+v: want the webhook alone, then as installed with the backstop", rep.APIServer.Runs)
	}
	for _, r := range rep.APIServer.Runs {
		if r.WebhookCallsPerPod != wantCalls[r.Reinvocation] {
			t.Errorf("apiserver %s: isolator called %.2f times per pod, want %v", r.Reinvocation, r.WebhookCallsPerPod, wantCalls[r.Reinvocation])
		}
		if len(r.Setups) != 3 {
			t.Fatalf("apiserver %s: %d setups", r.Reinvocation, len(r.Setups))
		}
		for i, s := range r.Setups {
			if s.Setup != setups[i] || s.Pods != 5 || s.P50Ms <= 0 || s.P99Ms < s.P50Ms {
				t.Errorf("apiserver %s: %+v", r.Reinvocation, s)
			}
		}
		if r.Setups[0].AddedP50Ms != 0 || r.RatioP50 == 0 {
			t.Errorf("apiserver %s: baseline added %v, ratio %v", r.Reinvocation, r.Setups[0].AddedP50Ms, r.RatioP50)
		}
	}

	if m := rep.Memory; m.RSSMiB <= 0 || m.PeakRSSMiB < m.RSSMiB || m.Rules != 50 || m.Namespaces != 30 || m.GoMemLimit != limit {
		t.Errorf("memory: %+v", m)
	}

	if p := rep.Propagation; len(p.Updates) != 2 || p.Replicas != 2 || p.MaxAllMs <= 0 {
		t.Errorf("propagation: %+v", p)
	} else {
		for _, u := range p.Updates {
			if len(u.ReplicaMs) != 2 || u.ReplicaMs[0] <= 0 || u.ReplicaMs[1] <= 0 {
				t.Errorf("propagation: %+v", u)
			}
		}
	}
}
