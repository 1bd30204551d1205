package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/testfixtures/samplepod"
	"github.com/isolator-dev/isolator/webhook"
)

// PropagationOptions configure the policy propagation measurement.
type PropagationOptions struct {
	Replicas int
	Updates  int
	// Poll is how often each replica is asked while an update propagates.
	Poll time.Duration
}

// PropagationUpdate is one ConfigMap update: how long until each replica decided by
// the new rule, counted from just before the update was sent.
type PropagationUpdate struct {
	UpdateCallMs float64   `json:"updateCallMs"`
	ReplicaMs    []float64 `json:"replicaMs"`
	// AllMs is the slowest replica: the time until the change held everywhere.
	AllMs float64 `json:"allMs"`
}

// PropagationResult is every update.
type PropagationResult struct {
	Replicas    int                 `json:"replicas"`
	Updates     []PropagationUpdate `json:"updates"`
	P50AllMs    float64             `json:"p50AllMs"`
	MaxAllMs    float64             `json:"maxAllMs"`
	LoadAverage string              `json:"loadAverage"`
}

func runPropagation(ctx context.Context, e *env, opts PropagationOptions) (*PropagationResult, error) {
	if err := e.runtimeClasses(ctx); err != nil {
		return nil, err
	}
	const ns = "perf-propagation"
	if _, err := e.cp.CreateNamespace(ctx, ns, map[string]string{setupLabel: "isolator"}); err != nil {
		return nil, err
	}
	cm, err := policyConfigMap("perf-propagation", namespaceRule("gen-0"))
	if err != nil {
		return nil, err
	}
	if err := e.applyConfigMap(ctx, cm); err != nil {
		return nil, err
	}
	defer e.deleteConfigMap(context.WithoutCancel(ctx), cm.Name)
	var replicas []*harness.Isolator
	defer func() {
		for _, r := range replicas {
			_ = r.Stop(harness.DefaultStopGrace)
		}
	}()
	for i := range opts.Replicas {
		name := "isolator-replica-" + strconv.Itoa(i+1)
		e.logf("propagation: starting %s", name)
		iso, err := e.startIsolator(ctx, harness.IsolatorOptions{Name: name, Args: []string{"--backstop=false"}})
		if err != nil {
			return nil, err
		}
		replicas = append(replicas, iso)
	}
	body, err := samplepod.Review(ns)
	if err != nil {
		return nil, err
	}
	clients := make([]*http.Client, len(replicas))
	for i, r := range replicas {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(r.CABundle)
		clients[i] = newClient(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, "h2", 1)
	}
	decidedBy := func(i int, rule string) (bool, error) {
		out, _, err := post(ctx, clients[i], replicas[i].URL+webhook.MutatePath, body, nil)
		if err != nil {
			return false, err
		}
		return bytes.Contains(out, []byte(`"rule":"perf-propagation/`+rule+`"`)), nil
	}
	for i := range replicas {
		if err := harness.WaitFor(ctx, time.Minute, replicas[i].Name()+" to load the policy", func(context.Context) (bool, error) {
			return decidedBy(i, "gen-0")
		}); err != nil {
			return nil, err
		}
	}
	res := &PropagationResult{Replicas: opts.Replicas}
	var alls []time.Duration
	for k := 1; k <= opts.Updates; k++ {
		rule := "gen-" + strconv.Itoa(k)
		cm, err := policyConfigMap("perf-propagation", namespaceRule(rule))
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := e.applyConfigMap(ctx, cm); err != nil {
			return nil, err
		}
		u := PropagationUpdate{UpdateCallMs: ms(time.Since(t0)), ReplicaMs: make([]float64, len(replicas))}
		var wg sync.WaitGroup
		errs := make([]error, len(replicas))
		for i := range replicas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				deadline := t0.Add(30 * time.Second)
				for time.Now().Before(deadline) {
					ok, err := decidedBy(i, rule)
					if err != nil {
						errs[i] = err
						return
					}
					if ok {
						u.ReplicaMs[i] = ms(time.Since(t0))
						return
					}
					time.Sleep(opts.Poll)
				}
				errs[i] = fmt.Errorf("%s still decides by the old rule 30s after the update", replicas[i].Name())
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		for _, v := range u.ReplicaMs {
			u.AllMs = max(u.AllMs, v)
		}
		alls = append(alls, time.Duration(u.AllMs*float64(time.Millisecond)))
		res.Updates = append(res.Updates, u)
		e.logf("propagation: update %d held in every replica after %.1f ms", k, u.AllMs)
	}
	sortDurations(alls)
	res.P50AllMs, res.MaxAllMs = ms(percentile(alls, 50)), ms(percentile(alls, 100))
	res.LoadAverage = loadAverage()
	return res, nil
}
