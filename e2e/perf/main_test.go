package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/isolator-dev/isolator/webhook"
)

// TestRunRejectsBadArguments covers the command line: each mistake is refused before
// anything starts, with a message naming the flag or mode.
func TestRunRejectsBadArguments(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no mode", nil, "a mode is required"},
		{"flag first", []string{"-pods", "3"}, "a mode is required"},
		{"unknown mode", []string{"bench"}, `unknown mode "bench"`},
		{"bad concurrency", []string{"direct", "-concurrency", "1,x"}, `--concurrency: "x" is not a positive number`},
		{"zero concurrency", []string{"direct", "-concurrency", "0"}, `--concurrency: "0" is not a positive number`},
		{"bad protocol", []string{"direct", "-protocols", "h3"}, `--protocols: "h3" is neither h2 nor http/1.1`},
		{"bad reinvocation", []string{"apiserver", "-reinvocation", "Always"}, `--reinvocation: "Always" is neither IfNeeded nor Never`},
		{"flag of another mode", []string{"memory", "-pods", "3"}, "flag provided but not defined: -pods"},
		{"bad webhook env", []string{"memory", "-webhook-env", "GOGC"}, `--webhook-env: "GOGC" is not KEY=VALUE`},
		{"missing CA file", []string{"direct", "-url", "https://127.0.0.1:1", "-ca", "/nonexistent/ca.crt"}, "--ca: open /nonexistent/ca.crt"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), c.args, &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want an error containing %q", err, c.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("printed a report for a refused command: %s", stdout.String())
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {90, 9}, {99, 10}, {99.9, 10}, {0, 1}, {100, 10}} {
		if got := percentile(d, c.p); got != c.want {
			t.Errorf("percentile(%v) = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
}

// TestGeneratePolicy checks that the generated policy is valid and has the rules asked
// for, as the memory measurement relies on.
func TestGeneratePolicy(t *testing.T) {
	cm, err := policyConfigMap("perf-memory", generatePolicy(200))
	if err != nil {
		t.Fatal(err)
	}
	src, errs := webhook.ParseConfigMap(cm)
	if len(errs) > 0 {
		t.Fatalf("the generated policy is invalid: %v", errs.ToAggregate())
	}
	if n := len(src.Policy.Spec.Rules); n != 200 {
		t.Errorf("%d rules, want 200", n)
	}
}
