package bootstrap

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the bootstrapper's Prometheus metrics, served by `isolator node run`.
// Labels are bounded: a result or a restart reason, never a path or a node name (the
// scrape target says which node).
type Metrics struct {
	installs   *prometheus.CounterVec
	ready      prometheus.Gauge
	restarts   *prometheus.CounterVec
	downtime   prometheus.Histogram
	repairs    prometheus.Counter
	uninstalls *prometheus.CounterVec
	sandboxes  *prometheus.CounterVec
	sandboxDur prometheus.Histogram
}

// NewMetrics registers the metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		installs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_node_install_total",
			Help: "Install or repair runs, by result (success, failure).",
		}, []string{"result"}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "isolator_node_ready",
			Help: "1 when containerd serves the kata handler and the node is labelled isolator.dev/kata-runtime=true, else 0.",
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_node_containerd_restarts_total",
			Help: "containerd restarts isolator caused, by reason (install, rollback, uninstall).",
		}, []string{"reason"}),
		downtime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "isolator_node_containerd_restart_downtime_seconds",
			Help:    "Time from asking for a containerd restart until CRI served again as wanted.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
		repairs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "isolator_node_drift_repairs_total",
			Help: "Drift repaired on a verified install (a deleted drop-in, damaged artifacts, a removed imports entry).",
		}),
		uninstalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_node_uninstall_total",
			Help: "Uninstall runs, by result (success, failure).",
		}, []string{"result"}),
		sandboxes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "isolator_node_sandbox_checks_total",
			Help: "Throwaway pod sandboxes started with the kata handler before labelling the node, by result (success, failure).",
		}, []string{"result"}),
		sandboxDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "isolator_node_sandbox_check_seconds",
			Help:    "Time to start, stop and remove the throwaway kata pod sandbox, successful or not.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120},
		}),
	}
	reg.MustRegister(m.installs, m.ready, m.restarts, m.downtime, m.repairs, m.uninstalls, m.sandboxes, m.sandboxDur)
	return m
}

// The methods below accept a nil receiver, so a Bootstrapper without metrics works.

func (m *Metrics) install(err error) {
	if m == nil || errors.Is(err, ErrRestartDeferred) {
		return
	}
	m.installs.WithLabelValues(result(err)).Inc()
	if err != nil {
		m.ready.Set(0)
	} else {
		m.ready.Set(1)
	}
}

func (m *Metrics) uninstall(err error) {
	if m == nil {
		return
	}
	m.uninstalls.WithLabelValues(result(err)).Inc()
	m.ready.Set(0)
}

func (m *Metrics) restart(reason string, down time.Duration) {
	if m == nil {
		return
	}
	m.restarts.WithLabelValues(reason).Inc()
	m.downtime.Observe(down.Seconds())
}

func (m *Metrics) sandboxCheck(err error, took time.Duration) {
	if m == nil {
		return
	}
	m.sandboxes.WithLabelValues(result(err)).Inc()
	m.sandboxDur.Observe(took.Seconds())
}

func (m *Metrics) repaired() {
	if m != nil {
		m.repairs.Inc()
	}
}

func result(err error) string {
	if err != nil {
		return "failure"
	}
	return "success"
}
