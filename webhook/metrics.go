package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are isolator's own admission and policy metrics. controller-runtime already
// exports per-path request counts and latency (controller_runtime_webhook_*); these
// add what only isolator knows. docs/metrics.md describes each.
type Metrics struct {
	Decisions        *prometheus.CounterVec
	AuditDecisions   *prometheus.CounterVec
	DecisionDuration prometheus.Histogram
	Rules            prometheus.Gauge
	Reloads          *prometheus.CounterVec
	LastReload       prometheus.Gauge
	ConfigMaps       *prometheus.GaugeVec
	PolicyDenials    *prometheus.CounterVec
	Shed             *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg: controller-runtime's
// registry in the webhook (served on the manager's metrics endpoint), a fresh one in
// tests.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_admission_decisions_total",
			Help: "Pod admission decisions, by the runtime class decided, the rule (<source>/<rule>) and the action (set, keep, replace, deny, none).",
		}, []string{"runtime_class", "rule", "action"}),
		AuditDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_admission_audit_total",
			Help: "What Audit-mode rules would have done, by runtime class, rule and action. These decisions change nothing.",
		}, []string{"runtime_class", "rule", "action"}),
		DecisionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "isolator_admission_decision_duration_seconds",
			Help:    "Time to decide one pod: decoding the pod, looking up its namespace, evaluating the policy and building the response.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 1},
		}),
		Rules: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "isolator_policy_rules",
			Help: "Rules in the policy in force, Enforce and Audit together.",
		}),
		Reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_policy_reloads_total",
			Help: "Policy rebuilds after a ConfigMap change, by result: success, or error when a ConfigMap was invalid and its last good version stayed in force.",
		}, []string{"result"}),
		LastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "isolator_policy_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last rebuild in which every policy ConfigMap was valid.",
		}),
		ConfigMaps: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "isolator_policy_configmaps",
			Help: "Policy ConfigMaps by state: valid, or invalid (its last good version, if any, stays in force).",
		}, []string{"state"}),
		PolicyDenials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_policy_validation_denials_total",
			Help: "Policy ConfigMap writes refused by the /validate-policy webhook, by operation.",
		}, []string{"operation"}),
		Shed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_admission_requests_shed_total",
			Help: "Admission requests not answered because of their body, by reason: too_large (over 7 MiB), slow (not all there within the read timeout) or busy (every large-body slot taken until the read deadline; the apiserver fails open to the backstop).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.Decisions, m.AuditDecisions, m.DecisionDuration, m.Rules, m.Reloads, m.LastReload, m.ConfigMaps, m.PolicyDenials, m.Shed)
	return m
}
