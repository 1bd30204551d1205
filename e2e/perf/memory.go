package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/policy"
)

// MemoryOptions configure the memory measurement.
type MemoryOptions struct {
	Namespaces int
	Rules      int
	// Backstop runs the webhook with its ValidatingAdmissionPolicy backstop, as
	// installed by default.
	Backstop bool
	// Load is how long to send reviews before reading the RSS, so that serving
	// buffers count too.
	Load time.Duration
	// GoMemLimit, when set, is the webhook's GOMEMLIMIT (e.g. "40MiB"), as a
	// Deployment would set it.
	GoMemLimit string
}

// MemoryResult is the webhook's memory with the namespaces and rules loaded.
type MemoryResult struct {
	Namespaces int     `json:"namespaces"`
	Rules      int     `json:"rules"`
	Backstop   bool    `json:"backstop"`
	GoMemLimit string  `json:"goMemLimit,omitempty"`
	RSSMiB     float64 `json:"rssMiB"`
	PeakRSSMiB float64 `json:"peakRSSMiB"`
	// HeapInuseMiB and GoSysMiB are the Go runtime's own view (go_memstats_*).
	HeapInuseMiB float64 `json:"heapInuseMiB"`
	GoSysMiB     float64 `json:"goSysMiB"`
	// AnonMiB is the RSS without the binary's file pages (RssAnon).
	AnonMiB float64 `json:"anonMiB"`
	// ReadySeconds is from the process start to /readyz and every rule loaded.
	ReadySeconds float64 `json:"readySeconds"`
	LoadAverage  string  `json:"loadAverage"`
}

func runMemory(ctx context.Context, e *env, opts MemoryOptions) (*MemoryResult, error) {
	if err := e.runtimeClasses(ctx); err != nil {
		return nil, err
	}
	// The namespace of the load's reviews (they reach the webhook directly, so it
	// needs no ServiceAccount). No generated rule matches it or the pod: the policy's
	// default applies.
	_, err := e.cp.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "perf-memory"}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("creating namespace perf-memory: %w", err)
	}
	e.logf("memory: creating %d namespaces", opts.Namespaces)
	if err := createNamespaces(ctx, e.cp.Client(), opts.Namespaces); err != nil {
		return nil, err
	}
	cm, err := policyConfigMap("perf-memory", generatePolicy(opts.Rules))
	if err != nil {
		return nil, err
	}
	if err := e.applyConfigMap(ctx, cm); err != nil {
		return nil, err
	}
	defer e.deleteConfigMap(context.WithoutCancel(ctx), cm.Name)
	e.logf("memory: starting the webhook with %d rules (%d bytes of policy), backstop %v", opts.Rules, len(cm.Data[policy.ConfigMapKey]), opts.Backstop)
	start := time.Now()
	var extra []string
	if opts.GoMemLimit != "" {
		extra = append(extra, "GOMEMLIMIT="+opts.GoMemLimit)
	}
	iso, err := e.startIsolator(ctx, harness.IsolatorOptions{Name: "isolator-memory",
		Args: []string{"--backstop=" + strconv.FormatBool(opts.Backstop)}}, extra...)
	if err != nil {
		return nil, err
	}
	defer func() { _ = iso.Stop(harness.DefaultStopGrace) }()
	if err := waitRules(ctx, iso, opts.Rules, 5*time.Minute); err != nil {
		return nil, err
	}
	res := &MemoryResult{Namespaces: opts.Namespaces, Rules: opts.Rules, Backstop: opts.Backstop, GoMemLimit: opts.GoMemLimit,
		ReadySeconds: time.Since(start).Seconds()}
	if opts.Load > 0 {
		if _, err := runDirect(ctx, DirectOptions{URL: iso.URL, CA: iso.CABundle, Namespace: "perf-memory", WantClass: "runc-rc",
			Concurrency: []int{8}, Protocols: []string{"h2"}, Duration: opts.Load}, e.logf); err != nil {
			return nil, err
		}
	}
	st, err := readProc(iso.PID())
	if err != nil {
		return nil, err
	}
	res.RSSMiB, res.PeakRSSMiB, res.AnonMiB = float64(st.rss)/(1<<20), float64(st.peak)/(1<<20), float64(st.anon)/(1<<20)
	if s, err := scrape(ctx, iso); err == nil {
		res.HeapInuseMiB = s["go_memstats_heap_inuse_bytes"] / (1 << 20)
		res.GoSysMiB = s["go_memstats_sys_bytes"] / (1 << 20)
	}
	res.LoadAverage = loadAverage()
	return res, nil
}

// createNamespaces creates n namespaces perf-ns-<i> with the labels clusters carry,
// 16 at a time. Existing ones are kept.
func createNamespaces(ctx context.Context, client kubernetes.Interface, n int) error {
	work := make(chan int)
	errs := make(chan error, 16)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
					Name: fmt.Sprintf("perf-ns-%05d", i),
					Labels: map[string]string{"team": fmt.Sprintf("t%d", i%100), "env": []string{"dev", "staging", "prod"}[i%3],
						"cost-center": fmt.Sprintf("cc-%d", i%40)},
				}}
				_, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
				if err != nil && !apierrors.IsAlreadyExists(err) {
					errs <- fmt.Errorf("creating namespace %s: %w", ns.Name, err)
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := range n {
		select {
		case work <- i:
		case err = <-errs:
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err != nil {
		return err
	}
	select {
	case err = <-errs:
		return err
	default:
		return nil
	}
}

// generatePolicy writes n rules of the kinds real policies hold, in equal parts:
// namespace globs, namespace selectors, pod selectors, image patterns and combinations.
func generatePolicy(n int) *policy.RuntimePolicy {
	p := &policy.RuntimePolicy{
		APIVersion: policy.APIVersion, Kind: policy.Kind,
		Spec: policy.PolicySpec{
			RuntimeClasses:      []policy.RuntimeClass{{Name: "kata-rc", Sandboxed: true}, {Name: "runc-rc"}},
			DefaultRuntimeClass: "runc-rc",
		},
	}
	for i := range n {
		r := policy.Rule{Name: fmt.Sprintf("rule-%05d", i), RuntimeClass: []string{"kata-rc", "runc-rc"}[i%2], Priority: int32(i % 10)}
		switch i % 5 {
		case 0:
			r.Match.Namespaces = []string{fmt.Sprintf("team-%d-*", i)}
		case 1:
			r.Match.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", i%100), "env": "prod"}}
		case 2:
			r.Match.PodSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{fmt.Sprintf("app-%d", i), fmt.Sprintf("job-%d", i)}}}}
		case 3:
			r.Match.AnyImage = []string{fmt.Sprintf("registry.example.com/team-%d/**", i)}
		case 4:
			r.Match.Namespaces = []string{fmt.Sprintf("tenant-%d", i)}
			r.Match.AllImages = []string{fmt.Sprintf("quay.io/org-%d/*:*", i)}
		}
		p.Spec.Rules = append(p.Spec.Rules, r)
	}
	return p
}
