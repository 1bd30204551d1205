package policy

import (
	"slices"
	"strings"
	"testing"
)

func TestNormalizeImage(t *testing.T) {
	const dg = "sha256:" + zeros
	cases := []struct {
		in   string
		want Image
	}{
		{"nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"nginx:1.25", Image{Name: "docker.io/library/nginx", Tag: "1.25"}},
		{"library/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"docker.io/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"docker.io/library/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"index.docker.io/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"index.docker.io/library/nginx:1", Image{Name: "docker.io/library/nginx", Tag: "1"}},
		{"registry-1.docker.io/library/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"registry-1.docker.io/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		// A port is a number, and the default HTTPS port is left out in any spelling
		// (see canonicalDomainPath): one registry, one canonical host.
		{"registry-1.docker.io:443/library/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"docker.io:443/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"docker.io:0443/evil/x", Image{Name: "docker.io/evil/x", Tag: "latest"}},
		{"registry-1.docker.io:000443/library/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"registry.hub.docker.com/library/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"registry.hub.docker.com:0443/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"quay.io:0443/untrusted/x", Image{Name: "quay.io/untrusted/x", Tag: "latest"}},
		{"ghcr.io:443/untrusted/x", Image{Name: "ghcr.io/untrusted/x", Tag: "latest"}},
		{"localhost:05000/x", Image{Name: "localhost:5000/x", Tag: "latest"}},
		{"quay.io:0/x", Image{Name: "quay.io:0/x", Tag: "latest"}},
		{"docker.io:5000/x", Image{Name: "docker.io:5000/x", Tag: "latest"}},
		{"[::1]:0443/x", Image{Name: "[::1]/x", Tag: "latest"}},
		{"Docker.IO/nginx", Image{Name: "docker.io/library/nginx", Tag: "latest"}},
		{"Index.Docker.IO/acme/app", Image{Name: "docker.io/acme/app", Tag: "latest"}},
		{"acme/app", Image{Name: "docker.io/acme/app", Tag: "latest"}},
		{"Registry.Example.COM/team/app:v1", Image{Name: "registry.example.com/team/app", Tag: "v1"}},
		{"Registry.Example.com:443/team/app", Image{Name: "registry.example.com/team/app", Tag: "latest"}},
		{"registry.example.com:5000/team/app", Image{Name: "registry.example.com:5000/team/app", Tag: "latest"}},
		{"localhost:5000/x", Image{Name: "localhost:5000/x", Tag: "latest"}},
		{"localhost/x", Image{Name: "localhost/x", Tag: "latest"}},
		{"LOCALHOST:5000/x", Image{Name: "localhost:5000/x", Tag: "latest"}},
		// An upper-case first component is a host (distribution/reference), reached
		// case-insensitively. Its canonical string would read as a Docker Hub path, so
		// it is the one form that does not normalise to itself.
		{"MyRegistry/x", Image{Name: "myregistry/x", Tag: "latest"}},
		{"nginx@" + dg, Image{Name: "docker.io/library/nginx", Digest: dg}},
		{"nginx:1.25@" + dg, Image{Name: "docker.io/library/nginx", Tag: "1.25", Digest: dg}},
		{"quay.io/a/b/c:v2@" + dg, Image{Name: "quay.io/a/b/c", Tag: "v2", Digest: dg}},
		{"[::1]:5000/x", Image{Name: "[::1]:5000/x", Tag: "latest"}},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			got, err := NormalizeImage(tc.in)
			if err != nil {
				t.Fatalf("NormalizeImage(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("NormalizeImage(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
			if strings.HasPrefix(tc.in, "MyRegistry") {
				return
			}
			// Normalising is idempotent: the canonical form normalises to itself.
			again, err := NormalizeImage(got.String())
			if err != nil || again != got {
				t.Errorf("NormalizeImage(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestNormalizeImageErrors(t *testing.T) {
	for _, in := range []string{"", "Nginx", "docker.io/Library/nginx", "nginx:", "nginx@sha256:abc", "a//b", zeros} {
		t.Run(in, func(t *testing.T) {
			got, err := NormalizeImage(in)
			if err == nil {
				t.Fatalf("NormalizeImage(%q) = %+v, want an error", in, got)
			}
			if !strings.Contains(err.Error(), "is not a valid reference") || !strings.Contains(err.Error(), `"`+in+`"`) {
				t.Errorf("error %q does not name the image", err)
			}
		})
	}
}

func TestImagePatterns(t *testing.T) {
	const dg = "sha256:" + zeros
	const dg1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	cases := []struct {
		pattern string
		norm    string // the pattern as matched
		match   []string
		miss    []string
	}{
		{"nginx", "docker.io/library/nginx",
			[]string{"nginx", "nginx:1.25", "docker.io/library/nginx@" + dg, "index.docker.io/nginx", "registry-1.docker.io/library/nginx", "registry-1.docker.io:443/library/nginx"},
			[]string{"acme/nginx", "quay.io/nginx", "nginx-unprivileged", "registry-1.docker.io:444/library/nginx"}},
		{"docker.io/**", "docker.io/**",
			[]string{"nginx", "acme/app", "docker.io/a/b/c", "index.docker.io/x/y", "registry-1.docker.io/library/nginx", "Docker.IO/x/y", "registry-1.docker.io:443/x/y", "DOCKER.IO:443/x"},
			[]string{"quay.io/a/b", "localhost:5000/x", "docker.io.evil.com/x", "registry.example.com/docker.io/x", "docker.io:5000/x/y"}},
		{"registry-1.docker.io:443/**", "docker.io/**",
			[]string{"registry-1.docker.io:443/library/nginx", "Registry-1.Docker.IO:443/x/y", "nginx", "registry-1.docker.io/x/y"}, []string{"quay.io/x"}},
		// A host without a port is the same registry as the host on 443, in any spelling.
		{"quay.io/**", "quay.io/**", []string{"quay.io/a", "quay.io:443/a/b", "QUAY.IO:443/a", "quay.io:0443/a", "quay.io:00443/a"}, []string{"quay.io:8443/a", "quay.io.evil:443/a", "quay.io:4430/a"}},
		{"quay.io:0443/**", "quay.io/**", []string{"quay.io/a", "quay.io:443/a/b"}, []string{"quay.io:5000/a"}},
		{"*.io:443/**", "*.io/**", []string{"quay.io/a", "ghcr.io:0443/a", "nginx"}, []string{"quay.io:5000/a"}},
		// "*" is any port, the default included.
		{"quay.io:*/**", "quay.io:*/**", []string{"quay.io:443/a", "quay.io:5000/a", "quay.io/a"}, []string{"ghcr.io/a"}},
		{"localhost:05000/x", "localhost:5000/x", []string{"localhost:5000/x", "localhost:0005000/x"}, []string{"localhost/x", "localhost:50000/x"}},
		// The name glob never reaches the port.
		{"quay.*/**", "quay.*/**", []string{"quay.io/a", "quay.io:443/a"}, []string{"quay.io:5000/a"}},
		// An IPv6 host matches its escaped literal only.
		{`\[::1\]:5000/**`, `\[::1\]:5000/**`, []string{"[::1]:5000/a", "[::1]:05000/a"}, []string{"[::1]/a", "[::2]:5000/a"}},
		{"[[]::1]:5000/**", "[[]::1]:5000/**", nil, []string{"[::1]:5000/a"}},
		{"registry.hub.docker.com/**", "docker.io/**", []string{"nginx", "registry.hub.docker.com/x/y"}, []string{"quay.io/x"}},
		{"index.docker.io/**", "docker.io/**", []string{"nginx", "acme/app"}, []string{"ghcr.io/x/y"}},
		{"registry-1.docker.io/library/*", "docker.io/library/*", []string{"nginx", "docker.io/library/redis:7"}, []string{"acme/app"}},
		{"docker.io/*", "docker.io/library/*", []string{"nginx"}, []string{"acme/app"}},
		{"Quay.IO/acme/*", "quay.io/acme/*", []string{"quay.io/acme/x"}, []string{"quay.io/acme/x/y"}},
		{"quay.io/*/app", "quay.io/*/app", []string{"quay.io/acme/app", "quay.io/b/app:1"}, []string{"quay.io/app", "quay.io/a/b/app"}},
		{"quay.io/**/app", "quay.io/**/app", []string{"quay.io/app", "quay.io/a/app", "quay.io/a/b/c/app"}, []string{"quay.io/a/app2", "quay.io/a/app/x"}},
		{"quay.io/team-*/**", "quay.io/team-*/**", []string{"quay.io/team-a/x", "quay.io/team-b/x/y"}, []string{"quay.io/teamx/y"}},
		{"**/nginx", "**/nginx", []string{"nginx", "quay.io/a/nginx", "localhost:5000/nginx"}, []string{"quay.io/nginx2"}},
		{"**", "**", []string{"nginx", "localhost/x", "quay.io/a/b/c/d"}, nil},
		{"*.example.com/**", "*.example.com/**", []string{"registry.example.com/a", "r2.example.com/a/b"}, []string{"example.com/a", "a.b.example.com.evil/x"}},
		{"localhost:5000/x", "localhost:5000/x", []string{"localhost:5000/x", "LOCALHOST:5000/x:1"}, []string{"localhost/x", "localhost:5001/x", "docker.io/x"}},
		{"registry.example.com:443/team/**", "registry.example.com/team/**", []string{"registry.example.com:443/team/a", "registry.example.com/team/a"}, []string{"registry.example.com:5000/team/a"}},
		// A tag never matches a digest-pinned image: the digest decides what is pulled.
		{"nginx:1.25", "docker.io/library/nginx:1.25", []string{"nginx:1.25"}, []string{"nginx", "nginx:1.26", "nginx@" + dg, "nginx:1.25@" + dg}},
		{"nginx:1.*", "docker.io/library/nginx:1.*", []string{"nginx:1.25"}, []string{"nginx:2.0", "nginx"}},
		{"nginx:*", "docker.io/library/nginx:*", []string{"nginx", "nginx:x"}, []string{"nginx-x:1", "nginx@" + dg, "nginx:x@" + dg}},
		{"nginx:?*", "docker.io/library/nginx:?*", []string{"nginx", "nginx:x"}, []string{"nginx@" + dg}},
		// A digest matches that digest, whatever the tag.
		{"nginx@" + dg, "docker.io/library/nginx@" + dg, []string{"nginx@" + dg, "nginx:1@" + dg}, []string{"nginx:1", "nginx@" + dg1}},
		{"nginx:1@" + dg, "docker.io/library/nginx:1@" + dg, []string{"nginx:1@" + dg, "nginx:2@" + dg, "nginx@" + dg}, []string{"nginx:1", "nginx:1@" + dg1}},
		{"localhost:5000/**:dev", "localhost:5000/**:dev", []string{"localhost:5000/a/b:dev"}, []string{"localhost:5000/a/b:prod"}},
		{"MyReg/x", "myreg/x", []string{"MyReg/x", "MYREG/x"}, []string{"myreg/x", "docker.io/myreg/x"}},
	}
	for _, tc := range cases {
		t.Run(tc.pattern, func(t *testing.T) {
			p, err := compileImagePattern(tc.pattern)
			if err != nil {
				t.Fatalf("compileImagePattern(%q): %v", tc.pattern, err)
			}
			if p.String() != tc.norm {
				t.Errorf("pattern %q normalises to %q, want %q", tc.pattern, p.String(), tc.norm)
			}
			for _, ref := range tc.match {
				img := images(t, ref)[0]
				if !p.matches(&img) {
					t.Errorf("%q does not match %q (%s)", tc.pattern, ref, img)
				}
			}
			for _, ref := range tc.miss {
				img := images(t, ref)[0]
				if p.matches(&img) {
					t.Errorf("%q matches %q (%s)", tc.pattern, ref, img)
				}
			}
		})
	}
}

func TestImagePatternErrors(t *testing.T) {
	cases := []struct{ pattern, err string }{
		{"", "empty image pattern"},
		{"docker.io/[", "bad glob"},
		{"docker.io/a**", "** must be a whole segment"},
		{"docker.io//x", "empty path segment"},
		{"docker.io/x/", "empty path segment"},
		{"nginx:", "empty tag"},
		{"nginx:[", "bad glob"},
		{"nginx@sha256:abc", "bad digest"},
		{"@sha256:" + zeros, "no repository name"},
		{"quay.io/Acme/app", "lower-case"},
		{strings.Repeat("a", 64) + ".example.com/x", "at most 63"},
		{strings.Repeat("H", 64) + "/x", "at most 63"},
		{strings.Repeat("abc.", 64) + "io/x", "at most 253"},
		{"Nginx", "lower-case"},
		{"quay.io:/x", "must be a number"},
		{"quay.io:44*/x", "must be a number"},
		{"localhost:http/x", "must be a number"},
	}
	for _, tc := range cases {
		t.Run(tc.pattern, func(t *testing.T) {
			_, err := compileImagePattern(tc.pattern)
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("compileImagePattern(%q) error = %v, want one containing %q", tc.pattern, err, tc.err)
			}
		})
	}
}

func TestPodFacts(t *testing.T) {
	rc := "kata-rc"
	pod := Pod{
		Metadata: PodMeta{Name: "p", Namespace: "shop", Labels: map[string]string{"app": "x"}},
		Spec: PodSpec{
			RuntimeClassName: &rc, HostNetwork: true, HostPID: true, HostIPC: true,
			InitContainers:      []Container{{Name: "init", Image: "busybox"}},
			Containers:          []Container{{Name: "a", Image: "quay.io/a/b:1"}, {Name: "b", Image: "localhost:5000/c"}},
			EphemeralContainers: []Container{{Name: "debug", Image: "index.docker.io/nicolaka/netshoot"}},
		},
	}
	nsLabels := map[string]string{"kubernetes.io/metadata.name": "shop"}
	f, err := pod.Facts("shop", nsLabels)
	if err != nil {
		t.Fatal(err)
	}
	wantImages := images(t, "docker.io/library/busybox:latest", "quay.io/a/b:1", "localhost:5000/c", "docker.io/nicolaka/netshoot")
	if f.Namespace != "shop" || f.NamespaceLabels["kubernetes.io/metadata.name"] != "shop" || len(f.NamespaceLabels) != 1 ||
		f.PodLabels["app"] != "x" || len(f.PodLabels) != 1 || f.RuntimeClassName != "kata-rc" || !f.HostNetwork || !f.HostPID || !f.HostIPC {
		t.Errorf("facts = %+v", f)
	}
	if len(f.Images) != len(wantImages) {
		t.Fatalf("images = %v, want %v", f.Images, wantImages)
	}
	for i := range wantImages {
		if f.Images[i] != wantImages[i] {
			t.Errorf("images[%d] = %v, want %v", i, f.Images[i], wantImages[i])
		}
	}

	bad := Pod{Spec: PodSpec{Containers: []Container{{Name: "ok", Image: "nginx"}, {Name: "web", Image: "Bad Image"}}}}
	if _, err := bad.Facts("x", nil); err == nil || !strings.Contains(err.Error(), "spec.containers[1] (web)") {
		t.Errorf("bad image error = %v, want it to name spec.containers[1] (web)", err)
	}
	var none Pod
	if f, err := none.Facts("x", nil); err != nil || f.Images != nil || f.RuntimeClassName != "" {
		t.Errorf("empty pod facts = %+v, %v", f, err)
	}
}

func TestPodDisplayName(t *testing.T) {
	for _, tc := range []struct {
		meta PodMeta
		want string
	}{
		{PodMeta{Name: "web-1", GenerateName: "web-"}, "web-1"},
		{PodMeta{GenerateName: "web-"}, "web-*"},
		{PodMeta{}, "(unnamed)"},
	} {
		p := Pod{Metadata: tc.meta}
		if got := p.DisplayName(); got != tc.want {
			t.Errorf("DisplayName(%+v) = %q, want %q", tc.meta, got, tc.want)
		}
	}
}

// TestInitContainerImageDecides follows a pod from its spec to its decision: the only
// Docker Hub image is in an init container, spelled with the host containerd pulls from.
func TestInitContainerImageDecides(t *testing.T) {
	snap := compile(t, "p", header+`  defaultRuntimeClass: runc-rc
  rules:
  - {name: hub, runtimeClass: kata-rc, match: {anyImage: ["docker.io/**"]}}
  - {name: trusted, runtimeClass: runc-rc, priority: 10, match: {allImages: ["registry.example.com/**"]}}
`)
	pod := Pod{Spec: PodSpec{
		InitContainers: []Container{{Name: "fetch", Image: "registry-1.docker.io/curlimages/curl:8.8.0"}},
		Containers:     []Container{{Name: "app", Image: "registry.example.com/app:1"}, {Name: "proxy", Image: "registry.example.com/proxy:1"}},
	}}
	f, err := pod.Facts("web", map[string]string{"kubernetes.io/metadata.name": "web"})
	if err != nil {
		t.Fatal(err)
	}
	checkOutcome(t, "decision", snap.Evaluate(&f).Outcome, want{class: "kata-rc", rule: "p/hub", action: ActionSet, reason: []string{"an image matches docker.io/**"}})
	pod.Spec.InitContainers = nil
	f, err = pod.Facts("web", nil)
	if err != nil {
		t.Fatal(err)
	}
	checkOutcome(t, "without the init container", snap.Evaluate(&f).Outcome, want{class: "runc-rc", rule: "p/trusted", action: ActionSet, reason: []string{"every image matches registry.example.com/**"}})
}

func TestImagePatternWarnings(t *testing.T) {
	const dg = "sha256:" + zeros
	snap := compile(t, "warn", `apiVersion: isolator.dev/v1alpha1
kind: RuntimePolicy
spec:
  runtimeClasses: [{name: kata-rc, sandboxed: true}, {name: runc-rc}]
  rules:
  - name: ipv6
    runtimeClass: kata-rc
    match: {anyImage: ["[::1]:5000/**", "\\[::1\\]:5000/**"]}
  - name: tags
    runtimeClass: kata-rc
    match: {anyImage: ["docker.io/evil/x:latest", "quay.io/evil/**"], allImages: ["registry.example.com/app:v1", "nginx:1@`+dg+`"]}
`)
	want := []string{
		`warn.yaml: spec.rules[0].match.anyImage[0]: "[::1]:5000/**" starts with a glob character class, not an IPv6 host; an IPv6 registry is matched only by its literal address with the brackets escaped: "\\[::1\\]:5000/**"`,
		`warn.yaml: spec.rules[1].match.anyImage[0]: "docker.io/evil/x:latest" never matches a digest-pinned image (docker.io/evil/x:latest@sha256:...), whose digest, not its tag, decides what is pulled; a pod can pin a digest to pass this pattern by. Leave out the tag (docker.io/evil/x) to match every reference to the repository`,
		`warn.yaml: spec.rules[1].match.allImages[1]: "nginx:1@` + dg + `" gives a tag and a digest; only the digest is compared, since it decides what is pulled`,
	}
	if got := snap.Warnings(); !slices.Equal(got, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
