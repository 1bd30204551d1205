package policy

import (
	"fmt"
	"strings"

	"github.com/distribution/reference"
)

// DockerHub is the canonical domain of Docker Hub images after normalisation.
const DockerHub = "docker.io"

// dockerHubAliases are host names that reach Docker Hub. reference already folds
// index.docker.io; registry-1.docker.io is the host containerd really pulls from, and a
// name spelled with it must not dodge a docker.io/** pattern.
var dockerHubAliases = map[string]bool{
	"docker.io":            true,
	"index.docker.io":      true,
	"registry-1.docker.io": true,
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

// HTTPSPort is the port a registry host may be spelled with and still be the same
// registry: quay.io:443 is quay.io to a puller.
const HTTPSPort = ":443"

// canonicalDomainPath lower-cases the registry host (DNS is case-insensitive) and folds
// every Docker Hub alias to docker.io, with or without the HTTPS port, adding library/
// to official image names. Other hosts keep a port as written; a pattern host without
// a port also matches the host with :443 (imagePattern.matches).
func canonicalDomainPath(domain, path string) (string, string) {
	d := strings.ToLower(domain)
	if dockerHubAliases[strings.TrimSuffix(d, HTTPSPort)] {
		d = DockerHub
		if !strings.Contains(path, "/") {
			path = "library/" + path
		}
	}
	return d, path
}
