package bootstrap

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.install(nil)
	m.restart("install", 150*time.Millisecond)
	m.repaired()
	m.install(ErrRestartDeferred) // deferred: neither success nor failure
	m.install(errors.New("boom"))
	m.uninstall(nil)
	m.restart("uninstall", 2*time.Second)

	want := `
# HELP isolator_node_install_total Install or repair runs, by result (success, failure).
# TYPE isolator_node_install_total counter
isolator_node_install_total{result="failure"} 1
isolator_node_install_total{result="success"} 1
# HELP isolator_node_ready 1 when containerd serves the kata handler and the node is labelled isolator.dev/kata-runtime=true, else 0.
# TYPE isolator_node_ready gauge
isolator_node_ready 0
# HELP isolator_node_containerd_restarts_total containerd restarts isolator caused, by reason (install, rollback, uninstall).
# TYPE isolator_node_containerd_restarts_total counter
isolator_node_containerd_restarts_total{reason="install"} 1
isolator_node_containerd_restarts_total{reason="uninstall"} 1
# HELP isolator_node_drift_repairs_total Drift repaired on a verified install (a deleted drop-in, damaged artifacts, a removed imports entry).
# TYPE isolator_node_drift_repairs_total counter
isolator_node_drift_repairs_total 1
# HELP isolator_node_uninstall_total Uninstall runs, by result (success, failure).
# TYPE isolator_node_uninstall_total counter
isolator_node_uninstall_total{result="success"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"isolator_node_install_total", "isolator_node_ready", "isolator_node_containerd_restarts_total",
		"isolator_node_drift_repairs_total", "isolator_node_uninstall_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "isolator_node_containerd_restart_downtime_seconds"); n != 1 {
		t.Errorf("downtime histogram series = %d, want 1", n)
	}
	var nilMetrics *Metrics // a Bootstrapper without metrics must not panic
	nilMetrics.install(nil)
	nilMetrics.restart("install", time.Second)
	nilMetrics.repaired()
	nilMetrics.uninstall(nil)
}
