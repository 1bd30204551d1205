package imageregex

import (
	"regexp"
	"strings"

	"github.com/isolator-dev/isolator/policy"
)

// dockerHubAliases are the registry hosts NormalizeImage folds into docker.io. The
// differential tests fail if this list and the policy package drift apart.
var dockerHubAliases = []string{"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}

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

// aliasHosts are the Docker Hub hosts, without a port or on the HTTPS port (443, in any
// spelling: ports are numbers, so 0443 is 443 too).
const aliasHosts = `(?i:docker\.io|index\.docker\.io|registry-1\.docker\.io|registry\.hub\.docker\.com)` + httpsPort + `?`

// Ports as a raw reference may spell them: digits, leading zeros allowed.
const (
	// httpsPort is the default port, which the canonical host leaves out.
	httpsPort = `(?::0*443)`
	// anyPort is any port.
	anyPort = `:[0-9]+`
	// otherPort is any port but 443.
	otherPort = `:0*(?:[0-9]{1,2}|[1-35-9][0-9]{2}|4[0-35-9][0-9]|44[0-24-9]|[1-9][0-9]{3,})`
)

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
	for _, qd := range hubDerive(q) {
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
	add(r.registryNames(q))
	return alternation(alts)
}

// hubDerive is derive(q, "docker.io") for a pattern whose first segment is its own
// registry host (or "**"): the host matches docker.io when its name glob does and its
// port is the default or any.
func hubDerive(q []string) [][]string {
	if len(q) == 0 || q[0] == "**" {
		return derive(q, policy.DockerHub)
	}
	name, port, _ := policy.SplitHostPort(q[0])
	if (port == "" || port == "*") && globMatch(name, policy.DockerHub) {
		return [][]string{q[1:]}
	}
	return nil
}

// registryNames renders "host/rest" names of registries other than Docker Hub that q
// matches, mirroring the policy's matcher: q's first segment is the pattern's own host
// (a name glob and a port), or "**", which takes the host and maybe more, or takes
// nothing and leaves the next glob to land on the host's name, whatever its port.
func (r *imageRenderer) registryNames(q []string) (string, bool) {
	q = skipStars(q)
	if len(q) == 0 {
		return "", false
	}
	host, rest := q[0], q[1:]
	var h string
	var ok bool
	if host == "**" {
		var alts []string
		if names, ok := r.names(q); ok {
			alts = append(alts, anyRegistry+"/"+names)
		}
		if len(rest) > 0 {
			if s, ok := r.registry(rest[0], "*"); ok {
				if names, ok := r.names(rest[1:]); ok {
					alts = append(alts, s+"/"+names)
				}
			}
		}
		return alternation(alts)
	}
	name, port, _ := policy.SplitHostPort(host)
	if h, ok = r.registry(name, port); !ok {
		return "", false
	}
	names, ok := r.names(rest)
	if !ok {
		return "", false
	}
	return h + "/" + names, true
}

// anyRegistry is any registry host a reference can name: one with a '.', localhost or
// an upper-case letter, any name with a port, or an IPv6 literal.
const anyRegistry = `(?:[-.0-9A-Za-z]*[.A-Z][-.0-9A-Za-z]*(?::[0-9]+)?|(?i:localhost)(?::[0-9]+)?|[-.0-9A-Za-z]+:[0-9]+|\[[0-9A-Fa-f:]+\](?::[0-9]+)?)`

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

// registry renders the raw spellings of a registry host other than Docker Hub whose
// canonical name matches the glob g and whose port is port: "" for the default (443,
// which a raw host may spell or leave out), "*" for any, or a number (which a raw host
// may spell with leading zeros). Without a port, a raw host names a registry only when
// it has a '.', is localhost or has an upper-case letter; with one, always. The Docker
// Hub aliases are a registry of their own only with a port other than 443.
func (r *imageRenderer) registry(g, port string) (string, bool) {
	ts, err := globTokens(g, nameAlphabet)
	if err != nil {
		r.err = err
		return "", false
	}
	var aliases []string
	for _, h := range dockerHubAliases {
		if globMatch(g, h) {
			aliases = append(aliases, h)
		}
	}
	// qualified: the names that are a registry without a port, and no alias.
	var qualified []string
	a := &nfa{ts: ts, alpha: nameAlphabet, need: setOf(".")}
	if s, ok := a.excluding(a.start(), aliases, true); ok {
		qualified = append(qualified, "(?i:"+s+")")
	}
	if globMatch(g, "localhost") {
		qualified = append(qualified, "(?i:localhost)")
	}
	// Neither '.' nor ':': a registry only when some letter is upper-case.
	plain := make([]token, len(ts))
	for i, t := range ts {
		s := t.set.minus(dotOrColon)
		plain[i] = token{set: s.or(s.upper()), star: t.star}
	}
	if s, ok := renderContaining(plain, upperSet); ok {
		qualified = append(qualified, s)
	}
	// nonAlias: every name but the aliases; all: every name.
	var nonAlias, all string
	var nonAliasOK, allOK bool
	if s, ok := a.excluding(a.start(), aliases, false); ok {
		nonAlias, nonAliasOK = "(?i:"+s+")", true
	}
	if s, ok := renderTokens(ts); ok {
		all, allOK = "(?i:"+s+")", true
	}
	var alts []string
	addPort := func(name string, ok bool, port string) {
		if ok {
			alts = append(alts, name+port)
		}
	}
	q, qOK := alternation(qualified)
	// Most host globs are a name with a '.': every name they match is a registry on
	// its own, and one alternative with an optional port covers both.
	same := qOK && nonAliasOK && q == nonAlias
	switch {
	case port == "" && same:
		addPort(q, true, httpsPort+"?")
	case port == "":
		addPort(q, qOK, "")
		addPort(nonAlias, nonAliasOK, httpsPort)
	case port == "*":
		if same {
			addPort(q, true, "(?:"+anyPort+")?")
		} else {
			addPort(q, qOK, "")
			addPort(nonAlias, nonAliasOK, anyPort)
		}
		al, alOK := alternation(quoteAll(aliases))
		addPort("(?i:"+al+")", alOK, otherPort)
	default:
		addPort(all, allOK, ":0*"+port)
	}
	// An IPv6 literal is matched only by the same literal (policy.matchHostName).
	if lit, ok := policy.LiteralGlob(g); ok && strings.HasPrefix(lit, "[") {
		switch port {
		case "":
			alts = append(alts, "(?i:"+regexp.QuoteMeta(lit)+")"+httpsPort+"?")
		case "*":
			alts = append(alts, "(?i:"+regexp.QuoteMeta(lit)+")(?:"+anyPort+")?")
		default:
			alts = append(alts, "(?i:"+regexp.QuoteMeta(lit)+"):0*"+port)
		}
	}
	return alternation(alts)
}

func quoteAll(words []string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = regexp.QuoteMeta(w)
	}
	return out
}

// suffix renders the tag and digest part. A pattern's digest is the whole test (the
// digest decides what is pulled, whatever the tag says); a pattern's tag never matches
// a digest-pinned image.
func (r *imageRenderer) suffix(p policy.ImagePattern) (string, bool) {
	const anyTag = `(?::[-.\w]+)?`
	switch {
	case p.Digest != "":
		return anyTag + "@" + regexp.QuoteMeta(p.Digest), true
	case p.Tag == "":
		return anyTag + `(?:@[-+.:\w]+)?`, true
	}
	var alts []string
	if tag, ok := r.glob(p.Tag, tagAlphabet); ok {
		alts = append(alts, ":"+tag)
	}
	// An image with neither tag nor digest is tagged latest.
	if globMatch(p.Tag, "latest") {
		alts = append(alts, "")
	}
	return alternation(alts)
}
