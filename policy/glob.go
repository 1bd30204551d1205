package policy

import (
	"fmt"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
)

// validGlob reports whether pattern is a well-formed shell glob (path.Match syntax).
func validGlob(pattern string) error {
	if _, err := path.Match(pattern, ""); err != nil {
		return fmt.Errorf("bad glob %q: unclosed [ or stray \\", pattern)
	}
	return nil
}

// globMatch matches one glob (validated at compile time) against s.
func globMatch(pattern, s string) bool {
	ok, _ := path.Match(pattern, s)
	return ok
}

// isLiteral reports whether a glob has no wildcards.
func isLiteral(pattern string) bool { return !strings.ContainsAny(pattern, `*?[\`) }

// imagePattern is a compiled image pattern. Name segments are globs within one path
// segment, or "**" which spans any number of segments. Tag and digest, when given, are
// compared too.
type imagePattern struct {
	text   string   // as written, for reasons
	name   string   // normalised name part, for messages and the backstop
	segs   []string // name split on '/'
	tag    string   // glob on the tag; empty: any
	digest string   // exact digest; empty: any
	// prefix is the leading literal segments joined by '/', used to index the pattern.
	prefix string
}

// compileImagePattern normalises a pattern the way NormalizeImage normalises images:
// "nginx" means docker.io/library/nginx and index.docker.io means docker.io.
func compileImagePattern(p string) (imagePattern, error) {
	ip := imagePattern{text: p}
	rest := p
	if p == "" {
		return ip, fmt.Errorf("empty image pattern: use \"**\" to match every image")
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		d := rest[i+1:]
		if _, err := digest.Parse(d); err != nil {
			return ip, fmt.Errorf("bad digest %q: must be <algorithm>:<hex>, e.g. sha256:%s", d, strings.Repeat("0", 64))
		}
		ip.digest = d
		rest = rest[:i]
	}
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i:], "/") {
		ip.tag = rest[i+1:]
		rest = rest[:i]
		if ip.tag == "" {
			return ip, fmt.Errorf("empty tag after ':'")
		}
		if err := validGlob(ip.tag); err != nil {
			return ip, err
		}
	}
	if rest == "" {
		return ip, fmt.Errorf("the pattern has no repository name")
	}
	segs := strings.Split(rest, "/")
	for _, s := range segs {
		if s == "" {
			return ip, fmt.Errorf("empty path segment (a doubled or trailing '/')")
		}
		if s == "**" {
			continue
		}
		if strings.Contains(s, "**") {
			return ip, fmt.Errorf("segment %q: ** must be a whole segment (use * within a segment)", s)
		}
		if err := validGlob(s); err != nil {
			return ip, err
		}
	}
	if segs[0] != "**" {
		// The first segment is a registry host only if it looks like one, exactly as in
		// distribution/reference: it has a '.' or a ':', is localhost, or has an
		// upper-case letter (repository paths are lower-case, hosts are not).
		if first := segs[0]; len(segs) > 1 && (strings.ContainsAny(first, ".:") || first == "localhost" || strings.ToLower(first) != first) {
			segs[0] = canonicalHost(first)
		} else {
			segs = append([]string{DockerHub}, segs...)
		}
		if dockerHubAliases[segs[0]] {
			segs[0] = DockerHub
			if len(segs) == 2 && segs[1] != "**" {
				segs = []string{DockerHub, "library", segs[1]}
			}
		}
	}
	for _, s := range segs[1:] {
		if strings.ToLower(s) != s && isLiteral(s) {
			return ip, fmt.Errorf("segment %q: repository paths are lower-case, so this pattern can never match; write it in lower case", s)
		}
	}
	ip.segs = segs
	ip.name = strings.Join(segs, "/")
	var lit []string
	for _, s := range segs {
		if !isLiteral(s) || s == "**" {
			break
		}
		lit = append(lit, s)
	}
	ip.prefix = strings.Join(lit, "/")
	return ip, nil
}

// matches reports whether img satisfies the pattern.
func (p *imagePattern) matches(img *Image) bool {
	if p.digest != "" && img.Digest != p.digest {
		return false
	}
	// A tag pattern needs a tag: a digest-only reference has none to compare.
	if p.tag != "" && (img.Tag == "" || !globMatch(p.tag, img.Tag)) {
		return false
	}
	return matchSegments(p.segs, img.Name)
}

// matchSegments matches glob segments against a '/'-separated name without allocating.
func matchSegments(segs []string, name string) bool {
	for len(segs) > 0 {
		if segs[0] == "**" {
			rest := segs[1:]
			if len(rest) == 0 {
				return true
			}
			// ** matches zero or more whole segments.
			for {
				if matchSegments(rest, name) {
					return true
				}
				i := strings.IndexByte(name, '/')
				if i < 0 {
					return false
				}
				name = name[i+1:]
			}
		}
		if name == "" {
			return false
		}
		seg := name
		next := ""
		more := false
		if i := strings.IndexByte(name, '/'); i >= 0 {
			seg, next, more = name[:i], name[i+1:], true
		}
		if !globMatch(segs[0], seg) {
			return false
		}
		segs, name = segs[1:], next
		if !more {
			return len(segs) == 0 || (len(segs) == 1 && segs[0] == "**")
		}
	}
	return name == ""
}

// String renders the normalised pattern as it is matched.
func (p *imagePattern) String() string {
	s := p.name
	if p.tag != "" {
		s += ":" + p.tag
	}
	if p.digest != "" {
		s += "@" + p.digest
	}
	return s
}
