package bootstrap

import (
	"fmt"
	"sync"
	"time"
)

// StuckAfter is how long one reconcile pass (detect, install or repair, restart
// containerd, wait for the kata handler) may run before the liveness probe fails. A
// pass is bounded by its own timeouts (the verify timeout, 2 minutes by default), so
// a pass this old is stuck on the host, and restarting the container is the fix.
const StuckAfter = 10 * time.Minute

// Health is what `isolator node run` answers on its probe endpoints: /healthz (the
// reconcile loop is not stuck) and /readyz (the last pass left Kata installed and
// containerd serving the kata handler, so the node is labelled ready).
type Health struct {
	mu         sync.Mutex
	passSince  time.Time // zero when no pass runs
	passes     int
	lastErr    error
	now        func() time.Time
	stuckAfter time.Duration
}

// NewHealth returns the probe state of a bootstrapper that has not finished a pass.
func NewHealth() *Health { return &Health{now: time.Now, stuckAfter: StuckAfter} }

func (h *Health) passStarted() {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.passSince = h.now()
	h.mu.Unlock()
}

func (h *Health) passDone(err error) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.passSince, h.lastErr = time.Time{}, err
	h.passes++
	h.mu.Unlock()
}

// Live is nil unless a reconcile pass has run for longer than StuckAfter.
func (h *Health) Live() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.passSince.IsZero() {
		if d := h.now().Sub(h.passSince); d > h.stuckAfter {
			return fmt.Errorf("a reconcile pass has run for %s (more than %s): stuck on the host (containerd, systemd or the CRI socket)", d.Round(time.Second), h.stuckAfter)
		}
	}
	return nil
}

// Ready is nil once the latest pass ended with Kata installed and serving.
func (h *Health) Ready() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.passes == 0:
		return fmt.Errorf("installing: the first pass has not finished")
	case h.lastErr != nil:
		return fmt.Errorf("not ready for Kata: %w", h.lastErr)
	}
	return nil
}

// SetHealth makes Run record each pass in h.
func (b *Bootstrapper) SetHealth(h *Health) { b.health = h }
