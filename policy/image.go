package policy

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// DockerHub is the canonical domain of Docker Hub images after normalisation.
const DockerHub = "docker.io"

// dockerHubAliases are host names that reach Docker Hub. reference already folds
// index.docker.io; registry-1.docker.io is the host containerd really pulls from, and
// registry.hub.docker.com serves the same registry API: a name spelled with either
// must not dodge a docker.io/** pattern.
var dockerHubAliases = map[string]bool{
	"docker.io":               true,
	"index.docker.io":         true,
	"registry-1.docker.io":    true,
	"registry.hub.docker.com": true,
}

// Image is a container image reference in canonical form: Name is
// "<domain>/<path>" with the domain lower-cased and Docker Hub spelled docker.io, Tag is
// "latest" when the reference has neither tag nor digest, Digest is "algo:hex" or empty.
type Image struct {
	Name   string
	Tag    string
	Digest string
}

// String renders the canonical reference, e.g. docker.io/library/nginx:latest.
func (i Image) String() string {
	s := i.Name
	if i.Tag != "" {
		s += ":" + i.Tag
	}
	if i.Digest != "" {
		s += "@" + i.Digest
	}
	return s
}

// NormalizeImage parses an image reference as a container runtime does and returns its
// canonical form: "nginx" -> docker.io/library/nginx:latest, index.docker.io/x ->
// docker.io/library/x:latest, localhost:5000/x stays on localhost:5000.
func NormalizeImage(s string) (Image, error) {
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Image{}, fmt.Errorf("image %q is not a valid reference: %w", s, err)
	}
	domain, path := canonicalDomainPath(reference.Domain(named), reference.Path(named))
	img := Image{Name: domain + "/" + path}
	if t, ok := named.(reference.Tagged); ok {
		img.Tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		img.Digest = d.Digest().String()
	}
	if img.Tag == "" && img.Digest == "" {
		img.Tag = "latest"
	}
	return img, nil
}

// defaultPort is the port a registry is reached on when its host names none: quay.io
// and quay.io:443 (or quay.io:0443) are the same registry to a puller.
const defaultPort = "443"

// SplitHostPort splits a registry host into its name and port. The port follows the
// last ':' outside brackets, so that an IPv6 literal ([::1]:5000) splits right; hasPort
// tells "quay.io:" (an empty port) from "quay.io".
func SplitHostPort(host string) (name, port string, hasPort bool) {
	depth, cut := 0, -1
	for i := 0; i < len(host); i++ {
		switch host[i] {
		case '[':
			depth++
		case ']':
			if depth > 0 {
				depth--
			}
		case ':':
			if depth == 0 {
				cut = i
			}
		}
	}
	if cut < 0 {
		return host, "", false
	}
	return host[:cut], host[cut+1:], true
}

// canonicalPort writes a port of digits as the number it is: without leading zeros,
// and empty for the default HTTPS port, which the canonical host leaves out.
func canonicalPort(digits string) string {
	p := strings.TrimLeft(digits, "0")
	if p == "" && digits != "" {
		p = "0"
	}
	if p == defaultPort {
		return ""
	}
	return p
}

// canonicalDomainPath lower-cases the registry host (DNS is case-insensitive), writes
// its port as a number and leaves out the default HTTPS port in any spelling (":443",
// ":0443"), and folds every Docker Hub alias to docker.io, adding library/ to official
// image names. Every spelling of one registry thus has one canonical host, which is
// what patterns and the rule index compare.
func canonicalDomainPath(domain, path string) (string, string) {
	name, port, _ := SplitHostPort(strings.ToLower(domain))
	if port = canonicalPort(port); port != "" {
		return name + ":" + port, path
	}
	if dockerHubAliases[name] {
		if !strings.Contains(path, "/") {
			path = "library/" + path
		}
		return DockerHub, path
	}
	return name, path
}
