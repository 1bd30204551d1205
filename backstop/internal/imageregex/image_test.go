package imageregex

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/isolator-dev/isolator/policy"
)

// Spellings that NormalizeImage folds together, and ones it must keep apart.
var diffImages = []string{
	"nginx", "nginx:1.25", "nginx:latest", "nginx@sha256:" + strings.Repeat("a", 64),
	"nginx:1.25@sha256:" + strings.Repeat("b", 64),
	"library/nginx", "docker.io/nginx", "docker.io/library/nginx:1", "index.docker.io/nginx",
	"INDEX.DOCKER.IO/nginx", "registry-1.docker.io/library/nginx", "Docker.IO/nginx:Tag",
	"bitnami/redis:7", "docker.io/bitnami/redis", "index.docker.io/bitnami/redis",
	"foo.bar", "foo.bar/baz", "localhost/app", "localhost:5000/app:v1", "LOCALHOST/app",
	"Localhost/app", "local/app", "Registry/app", "MyReg/team/app:1",
	"registry.example.com/platform/ledger:2.0.1", "REGISTRY.Example.com/platform/ledger",
	"registry.example.com:5000/platform/tools/kubectl:1.30",
	"registry.example.com/platform", "registry.example.com/shop/storefront:1.4.2",
	"quay.io/prometheus/node-exporter:v1.8.0", "ghcr.io/acme/x/y/z:sha-1234",
	"gcr.io/distroless/static:nonroot", "[::1]:5000/app", "127.0.0.1:5000/app:1",
	"docker.io/library/a/b", "index.docker.io/a/b/c", "library/library", "a/b/c/d/e",
	"registry-1.docker.io/x", "xdocker.io/app", "notdocker.io/nginx", "docker.iox/app",
	"index.docker.io:443/nginx", "docker.io:5000/nginx", "eu.gcr.io/p/app@sha256:" + strings.Repeat("c", 64),
	// One port, many spellings: a port is a number, and 443 is the default.
	"quay.io:0443/untrusted/x", "quay.io:00443/a", "QUAY.IO:443/a", "docker.io:0443/evil/x",
	"registry-1.docker.io:000443/library/nginx", "localhost:05000/app", "ghcr.io:443/untrusted/x",
	"registry.hub.docker.com/library/nginx", "registry.hub.docker.com:0443/evil/x", "[::1]/app",
	"[::1]:0443/app", "[::1]:05000/app", "myreg:443/app", "myreg:0443/a/b", "docker.io:05000/nginx",
	"quay.io:4430/a", "quay.io:44/a", "quay.io:0/a",
}

var diffPatterns = []string{
	"**", "docker.io/**", "nginx", "nginx:1.*", "nginx:latest", "nginx:*", "library/*",
	"*", "*/*", "*/**", "**/nginx", "**/redis:7", "bitnami/*", "index.docker.io/**",
	"registry-1.docker.io/library/nginx", "registry.example.com/platform/**",
	"registry.example.com/**", "REGISTRY.EXAMPLE.COM/platform/*", "*.example.com/**",
	"*.io/**", "*.io/nginx", "*.io/library/nginx", "*docker.io/**", "index.*/**",
	"localhost/**", "localhost:*/**", "local*/**", "*:5000/**", "[r]egistry/**",
	"registry.example.com/platform/**/kubectl:1.*", "**/**", "**/**/x", "a/**/**",
	"a/b/**", "a/**/e", "quay.io/prometheus/*:v1.[0-9].*", "ghcr.io/acme/**:sha-*",
	"nginx@sha256:" + strings.Repeat("a", 64), "*@sha256:" + strings.Repeat("a", 64),
	"gcr.io/distroless/static:non?oot", "[[]::1]:5000/**", "127.0.0.1:*/app",
	"**/app", "**:1", "**/library/**", "docker.io/library/*", "registry/**",
	"[a-z]*/**", "[^l]*/app", "foo.bar", "library/foo.bar", "*.bar", "x*/**", "*/library",
	"quay.io/**", "quay.io:443/**", "quay.io:0443/untrusted/**", "ghcr.io/untrusted/**",
	"*.io:443/**", "quay.io:*/**", "docker.io:*/**", "*:*/**", "localhost:05000/app",
	"localhost:5000/**", `\[::1\]:5000/**`, `\[::1\]/**`, "myreg:443/**", "**/quay.io/**",
	"**/quay*/a", "quay.io:0/**", "registry.hub.docker.com/**", "*.docker.com/**",
}

// diffStats counts the compared pairs, so a test can show it compared something.
type diffStats struct{ compared, matched int }

type compiledPattern struct {
	p  policy.ImagePattern
	re *regexp.Regexp // nil: matches nothing
}

// checkImage compares the rendered regex with the policy's matcher for one pair. It
// skips patterns and images the policy itself rejects.
func checkImage(t testing.TB, cache map[string]*compiledPattern, st *diffStats, pattern, raw string) {
	t.Helper()
	cp, ok := cache[pattern]
	if !ok {
		p, err := policy.ParseImagePattern(pattern)
		if err != nil {
			cache[pattern] = nil
			return
		}
		cp = &compiledPattern{p: p}
		re, ok, err := Image(p)
		if err != nil {
			t.Fatalf("pattern %q: %v", pattern, err)
		}
		if ok {
			if cp.re, err = regexp.Compile(re); err != nil {
				t.Fatalf("pattern %q renders an invalid regex %q: %v", pattern, re, err)
			}
		}
		cache[pattern] = cp
	}
	if cp == nil {
		return
	}
	img, err := policy.NormalizeImage(raw)
	if err != nil {
		return
	}
	want := cp.p.Matches(img)
	got := cp.re != nil && cp.re.MatchString(raw)
	st.compared++
	if want {
		st.matched++
	}
	if got != want {
		re := "(matches nothing)"
		if cp.re != nil {
			re = cp.re.String()
		}
		t.Errorf("pattern %q, image %q (normalised %s): regex says %v, policy says %v\nregex: %s", pattern, raw, img, got, want, re)
	}
}

func TestImageAgreesWithPolicy(t *testing.T) {
	cache, st := map[string]*compiledPattern{}, &diffStats{}
	for _, p := range diffPatterns {
		for _, img := range diffImages {
			checkImage(t, cache, st, p, img)
		}
	}
	// Every listed pattern and image is valid; about a fifth of the pairs match.
	if want := len(diffPatterns) * len(diffImages); st.compared != want || st.matched < want/10 {
		t.Errorf("compared %d pairs (%d matching), want %d pairs with at least a tenth matching", st.compared, st.matched, want)
	}
}

// TestImageRegexRandom draws images and patterns from the same small vocabulary, so
// that most pairs are near misses.
func TestImageRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	cache, st := map[string]*compiledPattern{}, &diffStats{}
	for range 3000 {
		img := randomImage(rng)
		pattern := randomPattern(rng)
		if rng.IntN(2) == 0 {
			pattern = patternFromImage(rng, img) // from the same image: mostly matches
		}
		checkImage(t, cache, st, pattern, img)
	}
	if st.compared < 1500 || st.matched < 300 {
		t.Errorf("compared %d pairs, %d matching: the generators drifted away from valid, overlapping names", st.compared, st.matched)
	}
	t.Logf("compared %d pairs, %d matching, %d distinct patterns", st.compared, st.matched, len(cache))
}

var (
	hosts = []string{"", "", "docker.io", "index.docker.io", "registry-1.docker.io", "Docker.IO", "localhost", "LocalHost", "localhost:5000", "quay.io", "Quay.io", "r.example.com", "R", "lib", "library",
		// Ports in their spellings.
		"quay.io:443", "quay.io:0443", "Quay.io:00443", "quay.io:5000", "localhost:05000", "docker.io:0443", "docker.io:5000",
		"registry-1.docker.io:443", "registry.hub.docker.com", "r.example.com:443", "lib:443", "[::1]", "[::1]:5000", "[::1]:0443"}
	pathSeg = []string{"library", "nginx", "a", "b", "app", "foo.bar", "x-y", "x_y", "localhost", "docker.io"}
	tags    = []string{"", "", "latest", "1.25", "v1", "Latest", "x_Y"}
	globSeg = []string{"*", "**", "?", "a*", "*a*", "[a-n]*", "[^l]*", "*.io", "*.*", "*:5000", "local*", "*ocker.io", "index.*", "[d-i]*", "x?y", "*.bar", "[.]io",
		"*:443", "*.io:*", "localhost:*", "quay.io:0443", "*:05000", `\[::1\]`, `\[::1\]:*`, "[[]::1]:5000", "docker.io:*", "*.com"}
	tagGlob = []string{"", "", "*", "1.*", "latest", "[A-Z]*", "?atest", "v?"}
	digestA = "sha256:" + strings.Repeat("a", 64)
)

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func randomImage(r *rand.Rand) string {
	var parts []string
	if h := pick(r, hosts); h != "" {
		parts = append(parts, h)
	}
	for n := 1 + r.IntN(3); n > 0; n-- {
		parts = append(parts, pick(r, pathSeg))
	}
	s := strings.Join(parts, "/")
	if t := pick(r, tags); t != "" {
		s += ":" + t
	}
	if r.IntN(5) == 0 {
		s += "@" + digestA
	}
	return s
}

func randomPattern(r *rand.Rand) string {
	if r.IntN(2) == 0 {
		return patternFromImage(r, randomImage(r))
	}
	var parts []string
	for n := 1 + r.IntN(4); n > 0; n-- {
		if r.IntN(2) == 0 {
			parts = append(parts, pick(r, globSeg))
		} else if r.IntN(2) == 0 {
			parts = append(parts, pick(r, hosts[2:]))
		} else {
			parts = append(parts, pick(r, pathSeg))
		}
	}
	s := strings.Join(parts, "/")
	if t := pick(r, tagGlob); t != "" {
		s += ":" + t
	}
	if r.IntN(8) == 0 {
		s += "@" + digestA
	}
	return s
}

// patternFromImage turns an image into a pattern that matches it or a near miss: some
// segments become globs, the tag or digest may go.
func patternFromImage(r *rand.Rand, img string) string {
	name, suffix := img, ""
	if i := strings.IndexAny(img, "@"); i >= 0 {
		name, suffix = img[:i], img[i:]
	}
	if i := strings.LastIndexByte(name, ':'); i >= 0 && !strings.Contains(name[i:], "/") {
		name, suffix = name[:i], name[i:]+suffix
	}
	segs := strings.Split(name, "/")
	for i := range segs {
		switch r.IntN(6) {
		case 0:
			segs[i] = "*"
		case 1:
			segs[i] = "**"
		case 2:
			segs[i] = pick(r, globSeg)
		}
	}
	if r.IntN(2) == 0 {
		suffix = ""
	}
	return strings.Join(segs, "/") + suffix
}

// FuzzImage checks the rendered regex against the policy's matcher for arbitrary
// patterns and images.
func FuzzImage(f *testing.F) {
	for i, p := range diffPatterns {
		f.Add(p, diffImages[i%len(diffImages)])
	}
	f.Fuzz(func(t *testing.T, pattern, raw string) {
		checkImage(t, map[string]*compiledPattern{}, &diffStats{}, pattern, raw)
	})
}

func TestNamespace(t *testing.T) {
	names := []string{"tenant-a", "tenant-", "tenant", "x-tenant-a", "a", "team-1", "team-12", "prod"}
	globs := [][]string{{"tenant-*"}, {"team-?"}, {"team-[0-9]*", "prod"}, {"*"}, {"[^t]*"}, {"TENANT-*"}, {`tenant\-*`}}
	for _, gs := range globs {
		re, ok, err := Namespace(gs)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			want := false
			for _, g := range gs {
				want = want || globMatch(g, n)
			}
			got := ok && regexp.MustCompile(re).MatchString(n)
			if got != want {
				t.Errorf("globs %v, namespace %q: regex %q says %v, path.Match says %v", gs, n, re, got, want)
			}
		}
	}
}

func ExampleImage() {
	p, _ := policy.ParseImagePattern("registry.example.com/platform/**")
	re, _, _ := Image(p)
	fmt.Println(re)
	// Output: ^(?i:registry\.example\.com)(?::0*443)?/platform(?:/[\-.0-9_a-z]+(?:/[\-.0-9_a-z]+)*)?(?::[-.\w]+)?(?:@[-+.:\w]+)?$
}
