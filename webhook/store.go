package webhook

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/isolator-dev/isolator/policy"
)

// Event reasons on policy ConfigMaps.
const (
	ReasonPolicyInvalid = "PolicyInvalid"
	ReasonPolicyLoaded  = "PolicyLoaded"
)

// EventRecorder is the part of an events.k8s.io recorder the store needs.
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// ParseConfigMap reads and validates the RuntimePolicy of a policy ConfigMap. The errors
// carry full field paths (data[policy.yaml].spec...), as `isolator policy validate` prints.
func ParseConfigMap(cm *corev1.ConfigMap) (*policy.Source, field.ErrorList) {
	src, errs := policy.ParseConfigMap(cm.Namespace, cm.Name, cm.Data)
	if len(errs) > 0 {
		return nil, errs
	}
	if errs := policy.Validate(src.Policy, src.Root); len(errs) > 0 {
		return nil, errs
	}
	return src, nil
}

// configMapState is what the store remembers about one policy ConfigMap.
type configMapState struct {
	resourceVersion string
	// lastGood is the newest version that validated; it stays in force while the
	// ConfigMap is invalid.
	lastGood *policy.Source
	invalid  bool
	problem  string
}

// Store turns the policy ConfigMaps into the Snapshot that admissions read: those in
// isolator's namespace are cluster policies, those anywhere else their namespace's team
// policies. Each change goes parse -> validate -> compile -> merge -> atomic swap; reads are
// one atomic load.
type Store struct {
	// Namespace is isolator's namespace, where the cluster policies live.
	Namespace string

	current atomic.Pointer[policy.Snapshot]
	ready   atomic.Bool

	mu     sync.Mutex // serialises rebuilds
	states map[string]*configMapState

	metrics  *Metrics
	recorder EventRecorder
	log      logr.Logger
	// onSwap is called after every swap, e.g. to regenerate the backstop.
	onSwap []func(*policy.Snapshot)
	now    func() time.Time
}

// NewStore returns an empty store. Until the first Rebuild, Snapshot returns an empty
// policy that decides nothing and Ready reports false.
func NewStore(m *Metrics, rec EventRecorder, log logr.Logger) *Store {
	s := &Store{states: map[string]*configMapState{}, metrics: m, recorder: rec, log: log, now: time.Now}
	empty, _ := policy.Compile()
	s.current.Store(empty)
	return s
}

// OnSwap registers fn to run after each new snapshot is swapped in.
func (s *Store) OnSwap(fn func(*policy.Snapshot)) { s.onSwap = append(s.onSwap, fn) }

// Snapshot is the policy in force.
func (s *Store) Snapshot() *policy.Snapshot { return s.current.Load() }

// Ready reports whether the store has built the policy from a full list of ConfigMaps.
func (s *Store) Ready() bool { return s.ready.Load() }

// Rebuild recomputes the policy from the complete current list of policy ConfigMaps. A
// ConfigMap that fails to parse or validate keeps its last good version in force (an
// Event and isolator_policy_configmaps{state="invalid"} report it); a ConfigMap that is
// gone takes its rules with it.
func (s *Store) Rebuild(ctx context.Context, cms []corev1.ConfigMap) {
	s.mu.Lock()
	defer s.mu.Unlock()
	log := s.log
	seen := map[string]bool{}
	var sources []policy.Source
	invalid := 0
	sort.Slice(cms, func(i, j int) bool { return s.key(&cms[i]) < s.key(&cms[j]) })
	for i := range cms {
		cm := &cms[i]
		key := s.key(cm)
		seen[key] = true
		st := s.states[key]
		if st == nil {
			st = &configMapState{}
			s.states[key] = st
		}
		if st.resourceVersion != cm.ResourceVersion || cm.ResourceVersion == "" {
			st.resourceVersion = cm.ResourceVersion
			src, errs := ParseConfigMap(cm)
			if src != nil {
				src.AsTeam(s.Namespace)
			}
			if len(errs) > 0 {
				st.invalid = true
				st.problem = errs.ToAggregate().Error()
				kept := "no earlier version was valid, so it adds no rules"
				if st.lastGood != nil {
					kept = "its last good version stays in force"
				}
				log.Error(errs.ToAggregate(), "policy ConfigMap is invalid", "configmap", key, "resourceVersion", cm.ResourceVersion, "kept", kept)
				if s.recorder != nil {
					s.recorder.Eventf(cm, nil, corev1.EventTypeWarning, ReasonPolicyInvalid, "Reload",
						"policy is invalid; %s: %s", kept, truncate(st.problem, 900))
				}
			} else {
				st.invalid, st.problem, st.lastGood = false, "", src
				log.Info("policy ConfigMap loaded", "configmap", key, "resourceVersion", cm.ResourceVersion, "rules", len(src.Policy.Spec.Rules))
				if s.recorder != nil {
					s.recorder.Eventf(cm, nil, corev1.EventTypeNormal, ReasonPolicyLoaded, "Reload", "policy loaded: %d rules", len(src.Policy.Spec.Rules))
				}
			}
		}
		if st.invalid {
			invalid++
		}
		if st.lastGood != nil {
			sources = append(sources, *st.lastGood)
		}
	}
	for name := range s.states {
		if !seen[name] {
			delete(s.states, name)
			log.Info("policy ConfigMap removed; its rules no longer apply", "configmap", name)
		}
	}
	snap, err := policy.Compile(sources...)
	if err != nil {
		// Every source validated on its own, so this can only be a clash between them,
		// such as two policies of one name; keep the policy in force.
		log.Error(err, "merging policies failed; the previous policy stays in force")
		s.observe(invalid, len(cms), false)
		return
	}
	for _, w := range snap.Warnings() {
		log.Info("policies disagree", "resolution", w)
	}
	s.current.Store(snap)
	s.ready.Store(true)
	s.observe(invalid, len(cms), invalid == 0)
	log.Info("policy in force", "configmaps", len(cms), "invalid", invalid, "rules", snap.Len(), "sources", strings.Join(snap.Sources(), ","))
	for _, fn := range s.onSwap {
		fn(snap)
	}
}

func (s *Store) observe(invalid, total int, ok bool) {
	if s.metrics == nil {
		return
	}
	s.metrics.ConfigMaps.WithLabelValues("invalid").Set(float64(invalid))
	s.metrics.ConfigMaps.WithLabelValues("valid").Set(float64(total - invalid))
	s.metrics.Rules.Set(float64(s.current.Load().Len()))
	if ok {
		s.metrics.Reloads.WithLabelValues("success").Inc()
		s.metrics.LastReload.Set(float64(s.now().Unix()))
	} else {
		s.metrics.Reloads.WithLabelValues("error").Inc()
	}
}

// key names a policy ConfigMap in logs and Status: by its name in isolator's namespace,
// as <namespace>/<name> elsewhere.
func (s *Store) key(cm *corev1.ConfigMap) string {
	if cm.Namespace == s.Namespace || cm.Namespace == "" {
		return cm.Name
	}
	return cm.Namespace + "/" + cm.Name
}

// Status describes each policy ConfigMap, for logs and the validator.
func (s *Store) Status() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for name, st := range s.states {
		switch {
		case st.invalid && st.lastGood != nil:
			out[name] = "invalid (last good version in force): " + st.problem
		case st.invalid:
			out[name] = "invalid: " + st.problem
		default:
			out[name] = "valid"
		}
	}
	return out
}

// LastGood returns the sources in force, for the validator's merge check.
func (s *Store) LastGood() []policy.Source {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []policy.Source
	for _, st := range s.states {
		if st.lastGood != nil {
			out = append(out, *st.lastGood)
		}
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("... (%d more bytes)", len(s)-n)
}
