package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/backstop"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/policy"
	"github.com/isolator-dev/isolator/webhook"
)

// The three setups of the comparison, each in its own namespace.
var setups = []string{"none", "map", "isolator"}

func setupNamespace(setup string) string { return "perf-" + setup }

// APIServerOptions configure the pod-create comparison.
type APIServerOptions struct {
	// Pods is how many pods each setup creates per reinvocation policy.
	Pods int
	// Reinvocation lists the reinvocationPolicy values to measure, each for both the
	// webhook and the MutatingAdmissionPolicy.
	Reinvocation []admissionregistrationv1.ReinvocationPolicyType
	// Warmup pods per setup, created first and not counted.
	Warmup int
	// Backstop lists the isolator setups to measure: false is the webhook alone, true
	// isolator as installed, the webhook and its backstop ValidatingAdmissionPolicy,
	// which the apiserver evaluates on every pod create too.
	Backstop []bool
}

// SetupLatency is one setup's pod-create latency.
type SetupLatency struct {
	Setup  string  `json:"setup"`
	Pods   int     `json:"pods"`
	P50Ms  float64 `json:"p50Ms"`
	P90Ms  float64 `json:"p90Ms"`
	P99Ms  float64 `json:"p99Ms"`
	MeanMs float64 `json:"meanMs"`
	// AddedP50Ms and AddedP99Ms are the latency over the no-mutation baseline.
	AddedP50Ms float64 `json:"addedP50Ms"`
	AddedP99Ms float64 `json:"addedP99Ms"`
}

// APIServerRun is the comparison under one reinvocation policy.
type APIServerRun struct {
	Reinvocation string `json:"reinvocationPolicy"`
	// Backstop says which isolator was measured: true as installed (webhook and
	// backstop ValidatingAdmissionPolicy), false the webhook alone.
	Backstop bool           `json:"backstop"`
	Setups   []SetupLatency `json:"setups"`
	// RatioP50 and RatioP99 are isolator's added latency over the
	// MutatingAdmissionPolicy's: at most 1.0 is the target.
	RatioP50 float64 `json:"ratioP50"`
	RatioP99 float64 `json:"ratioP99"`
	// WebhookCallsPerPod counts the calls isolator answered per pod it mutated: 2 when
	// the apiserver reinvokes it after the RuntimeClass plugin changed the pod.
	WebhookCallsPerPod float64 `json:"webhookCallsPerPod"`
	// Where the time goes, as means per call from the apiserver's and the webhook's
	// own histograms: the apiserver's call of isolator (encoding the review, the
	// round trip, reading the answer), isolator's handler as the webhook server timed
	// it (from the request's headers to the answer, so with the wait for the body),
	// isolator's decision itself (isolator_admission_decision_duration_seconds), and
	// the apiserver's evaluation of the MutatingAdmissionPolicy.
	APIServerWebhookCallMs float64 `json:"apiserverWebhookCallMs"`
	WebhookHandlerMs       float64 `json:"webhookHandlerMs"`
	WebhookDecisionMs      float64 `json:"webhookDecisionMs"`
	MAPEvaluationMs        float64 `json:"mapEvaluationMs"`
	LoadAverage            string  `json:"loadAverage"`
}

// APIServerResult is the whole comparison.
type APIServerResult struct {
	// WebhookProtocol is what the apiserver speaks to the webhook, told from the
	// connections it holds open after a burst of concurrent creates: HTTP/2
	// multiplexes them over one.
	WebhookProtocol    string         `json:"webhookProtocol"`
	WebhookConnections int            `json:"webhookConnections"`
	Runs               []APIServerRun `json:"runs"`
}

func runAPIServer(ctx context.Context, e *env, opts APIServerOptions) (*APIServerResult, error) {
	client := e.cp.Client()
	iso, stop, err := e.startComparisonWebhook(ctx, "isolator-apiserver")
	if err != nil {
		return nil, err
	}
	defer stop()
	for _, s := range setups {
		if _, err := e.cp.CreateNamespace(ctx, setupNamespace(s), map[string]string{setupLabel: s}); err != nil {
			return nil, err
		}
	}
	defer func() {
		c := context.WithoutCancel(ctx)
		_ = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(c, "isolator", metav1.DeleteOptions{})
		_ = client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Delete(c, "isolator", metav1.DeleteOptions{})
		_ = client.AdmissionregistrationV1().MutatingAdmissionPolicyBindings().Delete(c, "perf-sandbox", metav1.DeleteOptions{})
		_ = client.AdmissionregistrationV1().MutatingAdmissionPolicies().Delete(c, "perf-sandbox", metav1.DeleteOptions{})
		for _, s := range setups {
			_ = client.CoreV1().Pods(setupNamespace(s)).DeleteCollection(c, metav1.DeleteOptions{}, metav1.ListOptions{})
		}
	}()
	if err := iso.Register(ctx, client, e.manifests+"/base"); err != nil {
		return nil, err
	}
	res := &APIServerResult{}
	backstops := opts.Backstop
	if len(backstops) == 0 {
		backstops = []bool{false, true}
	}
	for _, withBackstop := range backstops {
		if err := setBackstop(ctx, e, withBackstop); err != nil {
			return nil, err
		}
		for _, rp := range opts.Reinvocation {
			run, err := compareOnce(ctx, e, iso, opts, rp, res)
			if err != nil {
				return nil, err
			}
			run.Backstop = withBackstop
			res.Runs = append(res.Runs, *run)
		}
	}
	if err := setBackstop(ctx, e, false); err != nil {
		return nil, err
	}
	return res, nil
}

// compareOnce measures the setups under one reinvocation policy. The first call also
// finds out what protocol the apiserver speaks to the webhook.
func compareOnce(ctx context.Context, e *env, iso *harness.Isolator, opts APIServerOptions, rp admissionregistrationv1.ReinvocationPolicyType, res *APIServerResult) (*APIServerRun, error) {
	if err := configureSetups(ctx, e, rp); err != nil {
		return nil, err
	}
	if err := waitMutated(ctx, e); err != nil {
		return nil, err
	}
	if res.WebhookProtocol == "" {
		n, err := burstConnections(ctx, e, iso)
		if err != nil {
			return nil, err
		}
		res.WebhookConnections, res.WebhookProtocol = n, "HTTP/1.1"
		if n == 1 {
			res.WebhookProtocol = "HTTP/2"
		}
	}
	e.logf("apiserver: reinvocationPolicy %s: %d pods per setup, interleaved (after %d warm-up)", rp, opts.Pods, opts.Warmup)
	return comparePods(ctx, e, iso, opts, string(rp))
}

// setBackstop installs or removes the backstop of the comparison's policy, as
// `isolator policy backstop` renders it, bound to the isolator setup's namespace only:
// the other setups' pods must not pay for it. (The webhook runs with --backstop=false
// so that it does not rebind it cluster-wide.)
func setBackstop(ctx context.Context, e *env, on bool) error {
	api := e.cp.Client().AdmissionregistrationV1()
	if !on {
		_ = api.ValidatingAdmissionPolicyBindings().Delete(ctx, backstop.Name, metav1.DeleteOptions{})
		err := api.ValidatingAdmissionPolicies().Delete(ctx, backstop.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		return nil
	}
	cm, err := policyConfigMap("perf", namespaceRule("sandbox"))
	if err != nil {
		return err
	}
	src, errs := webhook.ParseConfigMap(cm)
	if len(errs) > 0 {
		return errs.ToAggregate()
	}
	snap, err := policy.Compile(*src)
	if err != nil {
		return err
	}
	vaps, bindings, err := backstop.Generate(snap, backstop.Options{Namespace: harness.IsolatorNamespace})
	if err != nil {
		return fmt.Errorf("generating the backstop: %w", err)
	}
	if len(vaps) != 1 {
		return fmt.Errorf("generating the backstop: %d policies, want 1", len(vaps))
	}
	bindings[0].Spec.MatchResources.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{setupLabel: "isolator"}}
	vap, err := api.ValidatingAdmissionPolicies().Create(ctx, vaps[0], metav1.CreateOptions{})
	if err != nil {
		return err
	}
	if _, err := api.ValidatingAdmissionPolicyBindings().Create(ctx, bindings[0], metav1.CreateOptions{}); err != nil {
		return err
	}
	// In force once the apiserver has type-checked it (the status controller reports
	// it) and its informer has caught up.
	err = harness.WaitFor(ctx, time.Minute, "the backstop to be type-checked", func(ctx context.Context) (bool, error) {
		got, err := api.ValidatingAdmissionPolicies().Get(ctx, vap.Name, metav1.GetOptions{})
		return err == nil && got.Status.ObservedGeneration == got.Generation && got.Status.TypeChecking != nil, nil
	})
	time.Sleep(2 * time.Second)
	return err
}

// configureSetups points isolator's MutatingWebhookConfiguration at the isolator
// namespace only, and installs the equivalent MutatingAdmissionPolicy for the map
// namespace, both with reinvocation policy rp.
func configureSetups(ctx context.Context, e *env, rp admissionregistrationv1.ReinvocationPolicyType) error {
	api := e.cp.Client().AdmissionregistrationV1()
	mwc, err := api.MutatingWebhookConfigurations().Get(ctx, "isolator", metav1.GetOptions{})
	if err != nil {
		return err
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{setupLabel: "isolator"}}
		mwc.Webhooks[i].ReinvocationPolicy = &rp
	}
	if _, err := api.MutatingWebhookConfigurations().Update(ctx, mwc, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating the MutatingWebhookConfiguration: %w", err)
	}
	fail := admissionregistrationv1.Ignore
	mapPolicy := &admissionregistrationv1.MutatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "perf-sandbox"},
		Spec: admissionregistrationv1.MutatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
					},
				}},
			},
			FailurePolicy:      &fail,
			ReinvocationPolicy: rp,
			// The same pod as isolator's: the class, and the two annotations that record it.
			Mutations: []admissionregistrationv1.Mutation{{
				PatchType: admissionregistrationv1.PatchTypeApplyConfiguration,
				ApplyConfiguration: &admissionregistrationv1.ApplyConfiguration{Expression: `Object{
  metadata: Object.metadata{annotations: {"` + policy.AnnotationRuntimeClass + `": "kata-rc", "` + policy.AnnotationRule + `": "perf/sandbox"}},
  spec: Object.spec{runtimeClassName: "kata-rc"}
}`},
			}},
		},
	}
	binding := &admissionregistrationv1.MutatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "perf-sandbox"},
		Spec: admissionregistrationv1.MutatingAdmissionPolicyBindingSpec{
			PolicyName: "perf-sandbox",
			MatchResources: &admissionregistrationv1.MatchResources{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{setupLabel: "map"}},
			},
		},
	}
	cur, err := api.MutatingAdmissionPolicies().Get(ctx, mapPolicy.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.MutatingAdmissionPolicies().Create(ctx, mapPolicy, metav1.CreateOptions{})
	case err == nil:
		mapPolicy.ResourceVersion = cur.ResourceVersion
		_, err = api.MutatingAdmissionPolicies().Update(ctx, mapPolicy, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("applying the MutatingAdmissionPolicy: %w", err)
	}
	if _, err := api.MutatingAdmissionPolicyBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the MutatingAdmissionPolicyBinding: %w", err)
	}
	return nil
}

// waitMutated waits until a pod created in the map and isolator namespaces gets
// kata-rc: the apiserver picks up admission configuration from its informers.
func waitMutated(ctx context.Context, e *env) error {
	for _, s := range []string{"map", "isolator"} {
		err := harness.WaitFor(ctx, time.Minute, "the "+s+" setup to set kata-rc", func(ctx context.Context) (bool, error) {
			pod, err := newPod(setupNamespace(s))
			if err != nil {
				return false, err
			}
			out, err := e.cp.Client().CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				return false, err
			}
			return out.Spec.RuntimeClassName != nil && *out.Spec.RuntimeClassName == "kata-rc", nil
		})
		if err != nil {
			return err
		}
	}
	// The webhook configuration and the policy are picked up by each apiserver
	// informer on its own; give the reinvocation policy change the same time.
	time.Sleep(2 * time.Second)
	return nil
}

// comparePods creates opts.Pods pods in each setup's namespace, one at a time, in a
// fresh random order of the setups each round, so that drift in the machine's load
// hits every setup alike.
func comparePods(ctx context.Context, e *env, iso *harness.Isolator, opts APIServerOptions, rp string) (*APIServerRun, error) {
	pods := map[string]*corev1.Pod{}
	for _, s := range setups {
		p, err := newPod(setupNamespace(s))
		if err != nil {
			return nil, err
		}
		pods[s] = p
	}
	create := func(s string) (time.Duration, error) {
		t0 := time.Now()
		out, err := e.cp.Client().CoreV1().Pods(pods[s].Namespace).Create(ctx, pods[s].DeepCopy(), metav1.CreateOptions{})
		el := time.Since(t0)
		if err != nil {
			return 0, fmt.Errorf("creating a pod in %s: %w", pods[s].Namespace, err)
		}
		got := ""
		if out.Spec.RuntimeClassName != nil {
			got = *out.Spec.RuntimeClassName
		}
		if want := map[string]string{"none": "", "map": "kata-rc", "isolator": "kata-rc"}[s]; got != want {
			return 0, fmt.Errorf("setup %s: the pod got runtimeClassName %q, want %q", s, got, want)
		}
		return el, nil
	}
	for range opts.Warmup {
		for _, s := range setups {
			if _, err := create(s); err != nil {
				return nil, err
			}
		}
	}
	before, err := scrape(ctx, iso)
	if err != nil {
		return nil, err
	}
	apiBefore, err := scrapeAPIServer(ctx, e)
	if err != nil {
		return nil, err
	}
	lat := map[string][]time.Duration{}
	order := append([]string(nil), setups...)
	for range opts.Pods {
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, s := range order {
			d, err := create(s)
			if err != nil {
				return nil, err
			}
			lat[s] = append(lat[s], d)
		}
	}
	after, err := scrape(ctx, iso)
	if err != nil {
		return nil, err
	}
	apiAfter, err := scrapeAPIServer(ctx, e)
	if err != nil {
		return nil, err
	}
	calls := func(m map[string]float64) float64 {
		return sumMetric(m, "controller_runtime_webhook_requests_total", `webhook="`+webhook.MutatePath+`"`)
	}
	run := &APIServerRun{Reinvocation: rp, LoadAverage: loadAverage(),
		WebhookCallsPerPod:     (calls(after) - calls(before)) / float64(opts.Pods),
		APIServerWebhookCallMs: meanMs(apiBefore, apiAfter, "apiserver_admission_webhook_admission_duration_seconds", `name="pods.isolator.dev"`, `type="admit"`),
		WebhookHandlerMs:       meanMs(before, after, "controller_runtime_webhook_latency_seconds", `webhook="`+webhook.MutatePath+`"`),
		WebhookDecisionMs:      meanMs(before, after, "isolator_admission_decision_duration_seconds"),
		MAPEvaluationMs:        meanMs(apiBefore, apiAfter, "apiserver_mutating_admission_policy_check_duration_seconds", `policy="perf-sandbox"`),
	}
	var base SetupLatency
	for _, s := range setups {
		d := lat[s]
		sortDurations(d)
		var sum time.Duration
		for _, x := range d {
			sum += x
		}
		sl := SetupLatency{Setup: s, Pods: len(d), P50Ms: ms(percentile(d, 50)), P90Ms: ms(percentile(d, 90)),
			P99Ms: ms(percentile(d, 99)), MeanMs: ms(sum / time.Duration(max(1, len(d))))}
		if s == "none" {
			base = sl
		}
		sl.AddedP50Ms, sl.AddedP99Ms = sl.P50Ms-base.P50Ms, sl.P99Ms-base.P99Ms
		run.Setups = append(run.Setups, sl)
	}
	mapS, isoS := run.Setups[1], run.Setups[2]
	run.RatioP50 = ratio(isoS.AddedP50Ms, mapS.AddedP50Ms)
	run.RatioP99 = ratio(isoS.AddedP99Ms, mapS.AddedP99Ms)
	return run, nil
}

// ratio divides isolator's added latency by the MutatingAdmissionPolicy's. When the
// policy adds nothing measurable, the ratio says only whether isolator did.
func ratio(iso, mapAdded float64) float64 {
	if mapAdded <= 0 {
		if iso <= 0 {
			return 1
		}
		return 99
	}
	return iso / mapAdded
}

// burstConnections creates 16 pods at once in the isolator namespace and counts the
// TCP connections the apiserver then holds to the webhook.
func burstConnections(ctx context.Context, e *env, iso *harness.Isolator) (int, error) {
	pod, err := newPod(setupNamespace("isolator"))
	if err != nil {
		return 0, err
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.cp.Client().CoreV1().Pods(pod.Namespace).Create(ctx, pod.DeepCopy(), metav1.CreateOptions{}); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	port := iso.URL[strings.LastIndexByte(iso.URL, ':')+1:]
	return establishedTo(port)
}

// establishedTo counts established TCP connections whose local port is port (the
// server side of connections to it), from /proc/net/tcp and tcp6.
func establishedTo(port string) (int, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, err
	}
	want := fmt.Sprintf(":%04X", p)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 3 && strings.HasSuffix(fs[1], want) && fs[3] == "01" {
				n++
			}
		}
	}
	return n, nil
}

// scrapeAPIServer reads the apiserver's /metrics.
func scrapeAPIServer(ctx context.Context, e *env) (map[string]float64, error) {
	b, err := e.cp.Client().CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the apiserver's metrics: %w", err)
	}
	return parseSamples(string(b)), nil
}

// meanMs is the mean of a histogram's observations between two scrapes, in ms.
func meanMs(before, after map[string]float64, name string, labels ...string) float64 {
	n := sumMetric(after, name+"_count", labels...) - sumMetric(before, name+"_count", labels...)
	if n <= 0 {
		return 0
	}
	return (sumMetric(after, name+"_sum", labels...) - sumMetric(before, name+"_sum", labels...)) / n * 1000
}
