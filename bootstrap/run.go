package bootstrap

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/isolator-dev/isolator/bootstrap/nodestate"
)

// RunOptions configure the DaemonSet's long-running mode.
type RunOptions struct {
	// Interval between drift checks.
	Interval time.Duration
	// MinRestartInterval rate-limits containerd restarts for repairs: a repair that needs
	// a restart sooner than this after the last one waits for the next check.
	MinRestartInterval time.Duration
	// ShutdownTimeout bounds the uninstall after SIGTERM (keep it under the pod's
	// terminationGracePeriodSeconds).
	ShutdownTimeout time.Duration
}

// Run installs, then re-checks every Interval and repairs drift (a deleted drop-in,
// damaged artifacts, an import entry someone removed). When ctx ends (SIGTERM), it
// uninstalls only if the DaemonSet no longer selects this node; otherwise it is a
// rollout and everything stays, so running Kata pods keep working.
func (b *Bootstrapper) Run(ctx context.Context, ro RunOptions) error {
	if ro.Interval <= 0 {
		ro.Interval = time.Minute
	}
	if ro.ShutdownTimeout <= 0 {
		ro.ShutdownTimeout = 2 * time.Minute
	}
	b.log.Info("node bootstrapper running", "interval", ro.Interval, "minRestartInterval", ro.MinRestartInterval)
	var lastRestart time.Time
	b.allowRestart = func() bool {
		return lastRestart.IsZero() || time.Since(lastRestart) >= ro.MinRestartInterval
	}
	failures := 0
	for {
		b.health.passStarted()
		err := b.reconcile(ctx, &lastRestart)
		wait := ro.Interval
		if err != nil {
			failures++
			wait = retryAfter(failures, ro.Interval)
			if ctx.Err() == nil {
				b.log.Error(err, "reconcile failed; retrying", "in", wait, "failures", failures)
			}
		} else {
			failures = 0
		}
		b.health.passDone(err)
		select {
		case <-ctx.Done():
			return b.shutdown(ro.ShutdownTimeout)
		case <-time.After(wait):
		}
	}
}

// firstRetry is the wait after a first failed pass; it doubles with each further
// failure, up to the interval.
const firstRetry = 5 * time.Second

// retryAfter is the wait before the next pass after the n-th failure in a row.
func retryAfter(n int, interval time.Duration) time.Duration {
	wait := firstRetry
	for i := 1; i < n && wait < interval; i++ {
		wait *= 2
	}
	return min(wait, interval)
}

// reconcile repairs whatever differs from a verified install.
func (b *Bootstrapper) reconcile(ctx context.Context, lastRestart *time.Time) error {
	st, err := b.Status(ctx)
	if err != nil {
		return err
	}
	if st.Installed && len(st.Drift) == 0 && st.Serving {
		return nil
	}
	if st.Installed {
		b.log.Info("drift found; repairing", "drift", st.Drift, "serving", st.Serving, "criError", st.CRIError)
	}
	rep, err := b.Install(ctx)
	if rep != nil && rep.Restarted {
		*lastRestart = time.Now()
	}
	if err != nil {
		return err
	}
	if st.Installed {
		b.metrics.repaired()
		b.event(ctx, corev1.EventTypeNormal, nodestate.ReasonDrift, fmt.Sprintf("repaired drift: %v (containerd restarted: %v)", describeDrift(st), rep.Restarted))
	}
	return nil
}

func describeDrift(st *Status) []string {
	d := append([]string{}, st.Drift...)
	if !st.Serving {
		d = append(d, "containerd did not serve the kata handler")
	}
	return d
}

// shutdown decides between a rollout (keep everything) and a removal (uninstall).
func (b *Bootstrapper) shutdown(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if b.opts.Node == nil {
		b.log.Info("stopping; no cluster connection, so isolator's install stays in place")
		return nil
	}
	selected, why, err := b.opts.Node.Selected(ctx)
	if err != nil {
		b.log.Error(err, "cannot tell a rollout from a removal; keeping everything", "reason", why)
		return nil
	}
	if selected {
		b.log.Info("stopping for a rollout; Kata stays installed", "reason", why)
		return nil
	}
	b.log.Info("the DaemonSet no longer selects this node; uninstalling", "reason", why)
	if _, err := b.Uninstall(ctx); err != nil {
		return fmt.Errorf("uninstall on removal: %w", err)
	}
	return nil
}
