//go:build !race

package policy

import "testing"

// The decision path allocates nothing: these invariants are deterministic, so they are
// tests, run without the race detector (which allocates on its own); the Makefile's
// unit target runs them so. BenchmarkEvaluate measures the time.

func TestEvaluateAllocatesNothing(t *testing.T) {
	snap, err := Compile(benchSource(1000))
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range benchPods(t) {
		f := f
		if n := testing.AllocsPerRun(200, func() { snap.Evaluate(&f) }); n != 0 {
			t.Errorf("Evaluate of the %s pod at 1,000 rules: %v allocations, want 0", name, n)
		}
	}
	// A pod that names a class no policy lists, kept as a Container class, and a team
	// policy's namespace: the tiers and team paths allocate nothing either.
	cluster, team := src(t, "platform", gpuCluster), teamSource(t, "tenant-a", "team", tenantTeam)
	snap, err = Compile(cluster, team)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]Facts{
		"unknown class":  {Namespace: "ml", RuntimeClassName: "wasmtime", Images: images(t, "ghcr.io/acme/app:1")},
		"same tier":      {Namespace: "ml", RuntimeClassName: "nvidia", Images: images(t, "ghcr.io/acme/app:1")},
		"team rule":      {Namespace: "tenant-a", Images: images(t, "quay.io/acme/x:1")},
		"team, no match": {Namespace: "tenant-a", Images: images(t, "ghcr.io/acme/x:1")},
	} {
		f := f
		if n := testing.AllocsPerRun(200, func() { snap.Evaluate(&f) }); n != 0 {
			t.Errorf("Evaluate (%s): %v allocations, want 0", name, n)
		}
	}
}

func TestImageCacheHitAllocatesNothing(t *testing.T) {
	c := NewImageCache(100)
	refs := []string{"nginx", "quay.io:0443/untrusted/x:1", "registry.example.com/team/app@sha256:" + zeros}
	for _, r := range refs {
		if _, err := c.Normalize(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range refs {
		if n := testing.AllocsPerRun(200, func() { _, _ = c.Normalize(r) }); n != 0 {
			t.Errorf("a cached image (%s): %v allocations, want 0", r, n)
		}
	}
}
