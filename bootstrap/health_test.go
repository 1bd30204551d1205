package bootstrap

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestHealth(t *testing.T) {
	now := time.Unix(1000, 0)
	h := NewHealth()
	h.now = func() time.Time { return now }
	if err := h.Ready(); err == nil || !strings.Contains(err.Error(), "first pass") {
		t.Errorf("before any pass: Ready() = %v, want the first pass not finished", err)
	}
	if err := h.Live(); err != nil {
		t.Errorf("before any pass: Live() = %v", err)
	}
	h.passStarted()
	now = now.Add(StuckAfter)
	if err := h.Live(); err != nil {
		t.Errorf("a pass of exactly StuckAfter: Live() = %v", err)
	}
	now = now.Add(time.Second)
	if err := h.Live(); err == nil || !strings.Contains(err.Error(), "stuck") {
		t.Errorf("a pass longer than StuckAfter: Live() = %v, want stuck", err)
	}
	h.passDone(errors.New("/dev/kvm: no such device"))
	if err := h.Live(); err != nil {
		t.Errorf("after the pass: Live() = %v", err)
	}
	if err := h.Ready(); err == nil || !strings.Contains(err.Error(), "/dev/kvm") {
		t.Errorf("after a failed pass: Ready() = %v, want the pass's error", err)
	}
	h.passStarted()
	h.passDone(nil)
	if err := h.Ready(); err != nil {
		t.Errorf("after a good pass: Ready() = %v", err)
	}
	var none *Health
	none.passStarted() // a bootstrapper without probes
	none.passDone(nil)
}

func TestRetryAfterBacksOff(t *testing.T) {
	var got []time.Duration
	for n := 1; n <= 6; n++ {
		got = append(got, retryAfter(n, time.Minute))
	}
	want := []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second, 40 * time.Second, time.Minute, time.Minute}
	if !slices.Equal(got, want) {
		t.Errorf("retryAfter(1..6, 1m) = %v, want %v", got, want)
	}
	if got := retryAfter(1, 300*time.Millisecond); got != 300*time.Millisecond {
		t.Errorf("retryAfter(1, 300ms) = %v, want the interval", got)
	}
}
