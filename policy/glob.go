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

// validHostLength bounds a registry host as DNS does: at most 253 characters, and 63
// between dots. A longer name can't be a registry, and bounding it keeps the regexes
// the backstop renders from patterns small.
func validHostLength(host string) error {
	name, _, _ := strings.Cut(host, ":")
	if len(name) > 253 {
		return fmt.Errorf("registry host %.20q... is %d characters long; a host name has at most 253", name, len(name))
	}
	for _, label := range strings.Split(name, ".") {
		if len(label) > 63 {
			return fmt.Errorf("registry host label %.20q... is %d characters long; a label between dots has at most 63", label, len(label))
		}
	}
	return nil
}

// isLiteral reports whether a glob has no wildcards.
func isLiteral(pattern string) bool { return !strings.ContainsAny(pattern, `*?[\`) }

// glob is a compiled glob on a namespace name, one image path segment or a tag. Most
// policy globs are a literal or a literal followed by one '*', and those never reach
// path.Match: a request compares strings only.
type glob struct {
	pattern string
	// prefix is the literal text before the first wildcard; every match starts with it.
	prefix  string
	literal bool // no wildcard: compare with ==
	star    bool // prefix followed by a single trailing '*'
	any     bool // "**" in an image pattern: any number of whole segments
}

func newGlob(pattern string) glob {
	g := glob{pattern: pattern, any: pattern == "**"}
	i := strings.IndexAny(pattern, `*?[\`)
	switch {
	case i < 0:
		g.literal, g.prefix = true, pattern
	default:
		g.prefix = pattern[:i]
		g.star = i == len(pattern)-1 && pattern[i] == '*'
	}
	return g
}

// match reports whether s, which holds no '/', matches the glob.
func (g *glob) match(s string) bool {
	switch {
	case g.literal:
		return s == g.pattern
	case !strings.HasPrefix(s, g.prefix):
		return false
	case g.star:
		return true
	}
	return globMatch(g.pattern, s)
}

// imagePattern is a compiled image pattern. Name segments are globs within one path
// segment, or "**" which spans any number of segments. The first segment is the
// registry host (name and port), unless it is "**". Tag and digest, when given, are
// compared too.
type imagePattern struct {
	text   string // as written, for reasons
	name   string // normalised name part, for messages and the backstop
	segs   []glob // name split on '/'
	tag    string // glob on the tag; empty: any
	tagG   glob
	digest string // exact digest; empty: any
	// host matches the registry host when the pattern names one (segs[0] is not "**").
	host hostPattern
	// prefix is the leading literal segments joined by '/', used to index the pattern.
	prefix string
}

// hostPattern is a registry host in a pattern: a glob on the host's name and its port,
// compared as a number. The name glob never sees the port, so a wildcard can't reach
// across the ':' into it.
type hostPattern struct {
	name glob
	// port is the canonical port: "" for the default (443), "*" for any port, else the
	// number without leading zeros.
	port string
}

// matches reports whether a canonical host name and port satisfy the pattern.
func (h *hostPattern) matches(name, port string) bool {
	if h.port != "*" && h.port != port {
		return false
	}
	return matchHostName(&h.name, name)
}

// matchHostName matches a glob against a registry host's name. An IPv6 literal
// ([::1]) is only matched by the same literal, brackets escaped: a glob on it would read
// the brackets as a character class.
func matchHostName(g *glob, name string) bool {
	if strings.HasPrefix(name, "[") {
		lit, ok := LiteralGlob(g.pattern)
		return ok && lit == name
	}
	return g.match(name)
}

// LiteralGlob returns a glob's text with its escapes removed, and whether it has no
// wildcard (an unescaped '*', '?' or '['): the one string it matches. A registry name
// written so is the only kind that matches an IPv6 host.
func LiteralGlob(g string) (string, bool) {
	if !strings.ContainsAny(g, `*?[\`) {
		return g, true
	}
	var b strings.Builder
	for i := 0; i < len(g); i++ {
		switch g[i] {
		case '*', '?', '[':
			return "", false
		case '\\':
			i++
			if i == len(g) {
				return "", false
			}
		}
		b.WriteByte(g[i])
	}
	return b.String(), true
}

// patternHost checks and normalises the registry host of a pattern: the name
// lower-cased, the port written as a number (the default 443 in any spelling left out),
// or "*" for any port. A port can't be any other glob: ports are compared as numbers,
// and 5000 and 05000 are one port.
func patternHost(host string) (name, port string, err error) {
	name, port, hasPort := SplitHostPort(strings.ToLower(host))
	switch {
	case !hasPort:
		return name, "", nil
	case port == "*":
		return name, port, nil
	case port == "" || strings.Trim(port, "0123456789") != "":
		return "", "", fmt.Errorf("registry port %q must be a number, or * for any port (a host without a port is reached on 443)", port)
	}
	return name, canonicalPort(port), nil
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
			if err := validHostLength(first); err != nil {
				return ip, err
			}
			name, port, err := patternHost(first)
			if err != nil {
				return ip, err
			}
			if err := validGlob(name); err != nil {
				return ip, err
			}
			segs[0] = name
			if port != "" {
				segs[0] += ":" + port
			}
			ip.host = hostPattern{name: newGlob(name), port: port}
		} else {
			segs = append([]string{DockerHub}, segs...)
			ip.host = hostPattern{name: newGlob(DockerHub)}
		}
		if ip.host.port == "" && dockerHubAliases[segs[0]] {
			segs[0] = DockerHub
			ip.host = hostPattern{name: newGlob(DockerHub)}
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
	for _, s := range segs {
		if s == "**" && len(ip.segs) > 0 && ip.segs[len(ip.segs)-1].any {
			continue // "**/**" is "**"
		}
		ip.segs = append(ip.segs, newGlob(s))
	}
	ip.tagG = newGlob(ip.tag)
	ip.name = strings.Join(segs, "/")
	var lit []string
	for _, g := range ip.segs {
		if !g.literal {
			break
		}
		lit = append(lit, g.pattern)
	}
	ip.prefix = strings.Join(lit, "/")
	return ip, nil
}

// matches reports whether img satisfies the pattern. A pattern with a digest matches
// that digest; a pattern with only a tag never matches a digest-pinned image, since the
// digest, not the tag, decides what is pulled.
func (p *imagePattern) matches(img *Image) bool {
	switch {
	case p.digest != "":
		if img.Digest != p.digest {
			return false
		}
	case p.tag != "":
		if img.Digest != "" || !p.tagG.match(img.Tag) {
			return false
		}
	}
	host, rest := cutSegment(img.Name)
	if !p.segs[0].any {
		name, port, _ := SplitHostPort(host)
		return p.host.matches(name, port) && matchSegments(p.segs[1:], rest)
	}
	// The pattern starts with "**", which takes the registry host and maybe more.
	if matchSegments(p.segs, rest) {
		return true
	}
	// Or it takes nothing, and the next glob lands on the registry: it is matched against
	// the host's name, whatever the port.
	if len(p.segs) < 2 {
		return false
	}
	name, _, _ := SplitHostPort(host)
	return matchHostName(&p.segs[1], name) && matchSegments(p.segs[2:], rest)
}

// cutSegment splits the first '/'-separated segment off name.
func cutSegment(name string) (seg, rest string) {
	if i := strings.IndexByte(name, '/'); i >= 0 {
		return name[:i], name[i+1:]
	}
	return name, ""
}

// matchSegments matches glob segments against a '/'-separated name without allocating.
// "**" matches any number of whole segments, zero included. It backtracks only to the
// last "**", as wildcard matchers do for '*', so a pattern with many "**" stays linear
// in the name rather than exponential.
func matchSegments(segs []glob, name string) bool {
	i, rest := 0, name
	star, starRest := -1, ""
	for {
		if i < len(segs) && segs[i].any {
			star, starRest = i, rest
			i++
			continue
		}
		if rest == "" {
			// Every segment is used up. Remaining pattern segments can't match, and
			// letting a "**" take more would only leave fewer.
			return i == len(segs)
		}
		if i < len(segs) {
			seg, next := cutSegment(rest)
			if segs[i].match(seg) {
				i, rest = i+1, next
				continue
			}
		}
		if star < 0 || starRest == "" {
			return false
		}
		_, starRest = cutSegment(starRest)
		i, rest = star+1, starRest
	}
}

// String renders the normalised pattern as it is matched.
func (p *imagePattern) String() string {
	return Image{Name: p.name, Tag: p.tag, Digest: p.digest}.String()
}

// ImagePattern is a parsed, normalised image pattern, for tools that render patterns in
// another language (the backstop's CEL). Segments are globs within one path segment, or
// "**" spanning any number of segments ("**/**" is given as one "**"); the first is the
// registry host, lower-cased, unless it is "**".
type ImagePattern struct {
	Segments []string
	// Tag is a glob on the tag; empty matches any tag (and images without one). A
	// digest-only image has the empty tag, which only globs such as "*" match.
	Tag string
	// Digest must equal the image's digest; empty matches any.
	Digest string

	compiled *imagePattern
}

// ParseImagePattern normalises and checks an anyImage/allImages pattern exactly as
// Compile does.
func ParseImagePattern(p string) (ImagePattern, error) {
	ip, err := compileImagePattern(p)
	if err != nil {
		return ImagePattern{}, err
	}
	out := ImagePattern{Segments: make([]string, len(ip.segs)), Tag: ip.tag, Digest: ip.digest, compiled: &ip}
	for i, g := range ip.segs {
		out.Segments[i] = g.pattern
	}
	return out, nil
}

// Matches reports whether the normalised image satisfies the pattern, exactly as
// Evaluate matches it.
func (p ImagePattern) Matches(img Image) bool {
	return p.compiled != nil && p.compiled.matches(&img)
}
