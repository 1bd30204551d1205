package imageregex

import (
	"regexp"
	"strings"

	"github.com/isolator-dev/isolator/policy"
)

// dockerHubAliases are the registry hosts NormalizeImage folds into docker.io. The
// differential tests fail if this list and the policy package drift apart.
var dockerHubAliases = []string{"docker.io", "index.docker.io", "registry-1.docker.io"}

// Image renders a normalised image pattern as an anchored RE2 regex over the RAW
// image string of a container, as the pod spec spells it. It accepts exactly the valid
// references whose normalised form (policy.NormalizeImage) the pattern matches:
//
//	regexp.MatchString(Image(p), raw) == p.Matches(NormalizeImage(raw))
//
// for every raw image that NormalizeImage accepts. ok is false when no image can match.
//
// A raw name reaches its canonical form in one of four ways, decided by its first
// component f (distribution/reference's rule: f names a registry when it holds '.' or
// ':', is "localhost", or has an upper-case letter):
//
//	(a) "f", no '/':                  docker.io/library/f
//	(b) "f/r", f not a registry:      docker.io/f/r
//	(c) "f/r", f a Docker Hub alias:  docker.io/r, or docker.io/library/r for one segment
//	(d) "f/r", f another registry:    lower(f)/r
//
// The regex is the union of the four, each derived from the pattern's segments.
func Image(p policy.ImagePattern) (string, bool, error) {
	r := &imageRenderer{}
	var name string
	ok := true
	if MatchesEveryName(p.Segments) {
		// Every name matches: accept any spelling of one.
		name = anyName
	} else {
		name, ok = r.name(p.Segments)
	}
	if r.err != nil || !ok {
		return "", false, r.err
	}
	suffix, ok := r.suffix(p)
	if r.err != nil || !ok {
		return "", false, r.err
	}
	return "^" + name + suffix + "$", true, nil
}

type imageRenderer struct{ err error }

// segAny is one path segment; allSegs is one or more.
var (
	segAny  = pathAlphabet.regex() + "+"
	allSegs = segAny + "(?:/" + segAny + ")*"
)

// anyName accepts every valid name: components without '/' or '@', and no ':' in the
// last one (a ':' there starts the tag).
const anyName = `(?:[^/@]+/)*[^/:@]+`

// MatchesEveryName reports whether the segments are all "**", which every name
// matches.
func MatchesEveryName(q []string) bool {
	for _, s := range q {
		if s != "**" {
			return false
		}
	}
	return len(q) > 0
}

// aliasHosts are the Docker Hub hosts, with or without the HTTPS port.
const aliasHosts = `(?i:docker\.io|index\.docker\.io|registry-1\.docker\.io)(?::443)?`

func (r *imageRenderer) glob(g string, alpha charset) (string, bool) {
	s, ok, err := globRegex(g, alpha)
	if err != nil && r.err == nil {
		r.err = err
	}
	return s, ok
}

// name renders the four spellings of names the segments match.
func (r *imageRenderer) name(q []string) (string, bool) {
	var alts []string
	add := func(s string, ok bool) {
		if ok {
			alts = append(alts, s)
		}
	}
	for _, qd := range derive(q, policy.DockerHub) {
		// (a) a bare official image: docker.io/library/f.
		for _, ql := range derive(qd, "library") {
			add(r.single(ql))
		}
		// (b) an implicit Docker Hub path.
		add(r.first(qd, r.hubFirst))
		// (c) an explicit Docker Hub alias.
		var rest []string
		if s, ok := r.multi(qd); ok {
			rest = append(rest, s)
		}
		for _, ql := range derive(qd, "library") {
			if s, ok := r.single(ql); ok {
				rest = append(rest, s)
			}
		}
		if s, ok := alternation(rest); ok {
			alts = append(alts, aliasHosts+"/"+s)
		}
	}
	// (d) any other registry.
	add(r.first(q, r.registry))
	return alternation(alts)
}

// derive returns the segment lists q' with: s/n matches q iff n matches some q', for
// every non-empty name n.
func derive(q []string, s string) [][]string {
	if len(q) == 0 {
		return nil
	}
	if q[0] == "**" {
		return dedupe(append([][]string{q}, derive(q[1:], s)...))
	}
	if globMatch(q[0], s) {
		return [][]string{q[1:]}
	}
	return nil
}

func dedupe(qs [][]string) [][]string {
	seen := map[string]bool{}
	var out [][]string
	for _, q := range qs {
		k := strings.Join(q, "/") + "|"
		if !seen[k] {
			seen[k] = true
			out = append(out, q)
		}
	}
	return out
}

// skipStars collapses a run of leading "**": (SEG/)*(SEG/)*L = (SEG/)*L.
func skipStars(q []string) []string {
	for len(q) > 1 && q[0] == "**" && q[1] == "**" {
		q = q[1:]
	}
	return q
}

// names renders the names q matches, mirroring policy's matchSegments: "**" spans
// zero or more segments, except that after a literal segment that ends the name only a
// single trailing "**" may remain.
func (r *imageRenderer) names(q []string) (string, bool) {
	q = skipStars(q)
	switch {
	case len(q) == 0:
		return "", false
	case q[0] == "**" && len(q) == 1:
		return allSegs, true
	case q[0] == "**":
		rest, ok := r.names(q[1:])
		return "(?:" + segAny + "/)*" + rest, ok
	}
	g, ok := r.glob(q[0], pathAlphabet)
	if !ok {
		return "", false
	}
	switch {
	case len(q) == 1:
		return g, true
	case len(q) == 2 && q[1] == "**":
		return g + "(?:/" + allSegs + ")?", true
	}
	rest, ok := r.names(q[1:])
	return g + "/" + rest, ok
}

// single renders the one-segment names q matches.
func (r *imageRenderer) single(q []string) (string, bool) {
	q = skipStars(q)
	switch {
	case len(q) == 0:
		return "", false
	case q[0] == "**" && len(q) == 1:
		return segAny, true
	case q[0] == "**":
		return r.single(q[1:])
	case len(q) == 1 || (len(q) == 2 && q[1] == "**"):
		return r.glob(q[0], pathAlphabet)
	}
	return "", false
}

// multi renders the names of two or more segments q matches.
func (r *imageRenderer) multi(q []string) (string, bool) {
	q = skipStars(q)
	switch {
	case len(q) == 0:
		return "", false
	case q[0] == "**" && len(q) == 1:
		return segAny + "(?:/" + segAny + ")+", true
	case q[0] == "**":
		var alts []string
		if s, ok := r.names(q); ok {
			alts = append(alts, segAny+"/"+s)
		}
		if s, ok := r.multi(q[1:]); ok {
			alts = append(alts, s)
		}
		return alternation(alts)
	case len(q) == 1:
		return "", false
	}
	g, ok := r.glob(q[0], pathAlphabet)
	if !ok {
		return "", false
	}
	if len(q) == 2 && q[1] == "**" {
		return g + "/" + allSegs, true
	}
	rest, ok := r.names(q[1:])
	return g + "/" + rest, ok
}

// first renders "f/rest" names where the first component f is rendered by firstSeg
// (which applies the branch's rule for f) and the rest follows q.
func (r *imageRenderer) first(q []string, firstSeg func(glob string) (string, bool)) (string, bool) {
	q = skipStars(q)
	if len(q) == 0 {
		return "", false
	}
	var alts []string
	if q[0] == "**" {
		// "**" takes f (and maybe more), or stands for nothing.
		if f, ok := firstSeg("*"); ok {
			if rest, ok := r.names(q); ok {
				alts = append(alts, f+"/"+rest)
			}
		}
		if s, ok := r.first(q[1:], firstSeg); ok {
			alts = append(alts, s)
		}
		return alternation(alts)
	}
	f, ok := firstSeg(q[0])
	if !ok {
		return "", false
	}
	rest, ok := r.names(q[1:])
	if !ok {
		return "", false
	}
	return f + "/" + rest, true
}

// hubFirst renders a first component that is NOT a registry and matches g: lower-case,
// no '.' or ':', and not "localhost".
func (r *imageRenderer) hubFirst(g string) (string, bool) {
	ts, err := globTokens(g, pathAlphabet.minus(dotOrColon))
	if err != nil {
		r.err = err
		return "", false
	}
	a := &nfa{ts: ts, alpha: pathAlphabet.minus(dotOrColon)}
	var words []string
	if globMatch(g, "localhost") {
		words = []string{"localhost"}
	}
	return a.excluding(a.start(), words, false)
}

// registry renders a first component that names a registry other than Docker Hub and
// whose lower-cased form matches g.
func (r *imageRenderer) registry(g string) (string, bool) {
	ts, err := globTokens(g, hostAlphabet)
	if err != nil {
		r.err = err
		return "", false
	}
	var alts []string
	// With '.' or ':': any case, but not a Docker Hub alias.
	var words []string
	for _, h := range dockerHubAliases {
		for _, w := range []string{h, h + policy.HTTPSPort} {
			if globMatch(g, w) {
				words = append(words, w)
			}
		}
	}
	a := &nfa{ts: ts, alpha: hostAlphabet, need: dotOrColon}
	if s, ok := a.excluding(a.start(), words, true); ok {
		alts = append(alts, "(?i:"+s+")")
	}
	// localhost, in any case.
	if globMatch(g, "localhost") {
		alts = append(alts, "(?i:localhost)")
	}
	// Neither '.' nor ':': a registry only when some letter is upper-case.
	plain := make([]token, len(ts))
	for i, t := range ts {
		s := t.set.minus(dotOrColon)
		plain[i] = token{set: s.or(s.upper()), star: t.star}
	}
	if s, ok := renderContaining(plain, upperSet); ok {
		alts = append(alts, s)
	}
	// A host that matches is the same registry spelled with the HTTPS port.
	s, ok := alternation(alts)
	if !ok {
		return "", false
	}
	return "(?:" + s + ")(?::443)?", true
}

// suffix renders the tag and digest part.
func (r *imageRenderer) suffix(p policy.ImagePattern) (string, bool) {
	const anyTag = `(?::[-.\w]+)?`
	digest := `@[-+.:\w]+`
	if p.Digest != "" {
		digest = "@" + regexp.QuoteMeta(p.Digest)
	}
	if p.Tag == "" {
		if p.Digest == "" {
			return anyTag + "(?:" + digest + ")?", true
		}
		return anyTag + digest, true
	}
	var alts []string
	if tag, ok := r.glob(p.Tag, tagAlphabet); ok {
		if p.Digest == "" {
			alts = append(alts, ":"+tag+"(?:"+digest+")?")
		} else {
			alts = append(alts, ":"+tag+digest)
		}
	}
	// An image with neither tag nor digest is tagged latest; one with only a digest
	// has an empty tag.
	if p.Digest == "" && globMatch(p.Tag, "latest") {
		alts = append(alts, "")
	}
	if globMatch(p.Tag, "") {
		alts = append(alts, digest)
	}
	return alternation(alts)
}
