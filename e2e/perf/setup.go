package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/testfixtures/samplepod"
	"github.com/isolator-dev/isolator/policy"
)

// setupLabel keys the namespaces each setup applies to.
const setupLabel = "perf.isolator.dev/setup"

// env is the control plane a measurement runs against. A run of the tool starts its
// own; the smoke test shares one between the measurements.
type env struct {
	cp        *harness.ControlPlane
	manifests string
	// logf reports progress (to stderr in the tool, to t.Logf in tests).
	logf func(format string, args ...any)
	// webhookEnv is added to each webhook's environment (KEY=VALUE), e.g. Go runtime
	// settings such as GOMEMLIMIT that a Deployment would set.
	webhookEnv []string
	// webhookArgs are added to each webhook's flags, e.g. --http2=false.
	webhookArgs []string
}

func startEnv(ctx context.Context, logf func(string, ...any)) (*env, error) {
	logf("starting etcd, kube-apiserver and kube-controller-manager")
	startCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cp, err := harness.Start(startCtx, harness.Options{})
	if err != nil {
		return nil, err
	}
	e, err := newEnv(ctx, cp, logf)
	if err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return e, nil
}

// newEnv prepares a running control plane: isolator's namespace, where the policy
// ConfigMaps go.
func newEnv(ctx context.Context, cp *harness.ControlPlane, logf func(string, ...any)) (*env, error) {
	manifests, err := harness.ManifestsDir()
	if err != nil {
		return nil, err
	}
	if _, err := cp.CreateNamespace(ctx, harness.IsolatorNamespace, nil); err != nil {
		return nil, err
	}
	return &env{cp: cp, manifests: manifests, logf: logf}, nil
}

// runtimeClasses installs kata-rc and runc-rc from manifests/runtimeclasses.
func (e *env) runtimeClasses(ctx context.Context) error {
	_, err := e.cp.Kubectl(ctx, nil, "apply", "--server-side", "-k", filepath.Join(e.manifests, "runtimeclasses"))
	return err
}

// newPod is samplepod.Pod as a typed Pod, for creating through the apiserver.
func newPod(namespace string) (*corev1.Pod, error) {
	b, err := json.Marshal(samplepod.Pod(namespace))
	if err != nil {
		return nil, err
	}
	pod := &corev1.Pod{}
	return pod, json.Unmarshal(b, pod)
}

// policyConfigMap wraps a RuntimePolicy in a policy ConfigMap.
func policyConfigMap(name string, p *policy.RuntimePolicy) (*corev1.ConfigMap, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: harness.IsolatorNamespace,
			Labels: map[string]string{policy.PolicyLabel: "true"}},
		Data: map[string]string{policy.ConfigMapKey: string(b)},
	}, nil
}

// namespaceRule is the policy of the comparison: pods in namespaces labelled with the
// isolator setup run in kata-rc, and nothing else changes.
func namespaceRule(name string) *policy.RuntimePolicy {
	return &policy.RuntimePolicy{
		APIVersion: "isolator.dev/v1alpha1", Kind: "RuntimePolicy",
		Spec: policy.PolicySpec{
			RuntimeClasses: []policy.RuntimeClass{{Name: "kata-rc", Sandboxed: true}, {Name: "runc-rc"}},
			Rules: []policy.Rule{{Name: name, RuntimeClass: "kata-rc",
				Match: policy.Match{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{setupLabel: "isolator"}}}}},
		},
	}
}

func (e *env) applyConfigMap(ctx context.Context, cm *corev1.ConfigMap) error {
	api := e.cp.Client().CoreV1().ConfigMaps(cm.Namespace)
	cur, err := api.Get(ctx, cm.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, cm, metav1.CreateOptions{})
	case err == nil:
		cm.ResourceVersion = cur.ResourceVersion
		_, err = api.Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("applying ConfigMap %s: %w", cm.Name, err)
	}
	return nil
}

func (e *env) deleteConfigMap(ctx context.Context, name string) {
	err := e.cp.Client().CoreV1().ConfigMaps(harness.IsolatorNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		e.logf("deleting ConfigMap %s: %v", name, err)
	}
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) ([0-9.e+-]+|NaN|\+Inf)$`)

// scrape returns every sample a webhook exposes, keyed by name{labels}.
func scrape(ctx context.Context, iso *harness.Isolator) (map[string]float64, error) {
	text, err := iso.Metrics(ctx)
	if err != nil {
		return nil, err
	}
	return parseSamples(text), nil
}

// parseSamples reads a Prometheus text exposition into name{labels} -> value.
func parseSamples(text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if m := sampleLine.FindStringSubmatch(line); m != nil {
			if v, err := strconv.ParseFloat(m[2], 64); err == nil {
				out[m[1]] = v
			}
		}
	}
	return out
}

// sumMetric adds up every series of a metric whose labels contain all of the given
// label pairs.
func sumMetric(samples map[string]float64, name string, labels ...string) float64 {
	total := 0.0
	for k, v := range samples {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(k, l) {
				ok = false
			}
		}
		if ok {
			total += v
		}
	}
	return total
}

// waitRules waits until the webhook's policy in force has want rules.
func waitRules(ctx context.Context, iso *harness.Isolator, want int, timeout time.Duration) error {
	return harness.WaitFor(ctx, timeout, fmt.Sprintf("%s to load %d rules", iso.Name(), want), func(ctx context.Context) (bool, error) {
		s, err := scrape(ctx, iso)
		if err != nil {
			return false, err
		}
		v, ok := s["isolator_policy_rules"]
		return ok && int(v) == want, nil
	})
}

// procStat is what /proc says about a process.
type procStat struct {
	cpu       time.Duration // user + system
	rss, peak int64         // bytes: VmRSS, VmHWM
	anon      int64         // bytes: RssAnon, the RSS less file-backed pages
}

// clockTicks is USER_HZ, which /proc/<pid>/stat counts CPU time in: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func readProc(pid int) (procStat, error) {
	var st procStat
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// The command name (field 2) may hold spaces: fields count from its closing ')'.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return st, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, fields[11], fields[12])
	}
	st.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			st.rss = kb << 10
		case "VmHWM":
			st.peak = kb << 10
		case "RssAnon":
			st.anon = kb << 10
		}
	}
	return st, sc.Err()
}

// resetPeakRSS starts a new VmHWM period (Linux 4.0+), so that each phase reports its
// own peak. Failing to is not fatal: the peak is then since the process started.
func resetPeakRSS(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// loadAverage reads /proc/loadavg: the machine is shared, and numbers mean little
// without it.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return strings.TrimSpace(string(b))
	}
	return strings.Join(f[:3], " ")
}

// percentile returns the p-th percentile (0..100) of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p/100*float64(len(sorted))+0.5) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

// selfCPU is this process's user+system time: the load generator's share of the
// machine.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startIsolator starts a webhook with e.webhookArgs added to its flags and with
// e.webhookEnv and extra (KEY=VALUE) in its environment. The harness passes this process's environment on to what it starts,
// so the variables are set for the moment of the start.
func (e *env) startIsolator(ctx context.Context, opts harness.IsolatorOptions, extra ...string) (*harness.Isolator, error) {
	vars := append(append([]string(nil), e.webhookEnv...), extra...)
	for _, kv := range vars {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("webhook environment %q is not KEY=VALUE", kv)
		}
		if old, had := os.LookupEnv(k); had {
			defer func() { _ = os.Setenv(k, old) }()
		} else {
			defer func() { _ = os.Unsetenv(k) }()
		}
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	opts.Args = append(append([]string(nil), opts.Args...), e.webhookArgs...)
	return e.cp.StartIsolator(ctx, opts)
}
