// Package imageregex renders the policy's globs and image patterns as RE2 regular
// expressions, for the backstop's CEL matches(). It is pure and small so that its
// fuzz target builds fast.
package imageregex

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"unicode/utf8"
)

// This file turns the policy's globs into RE2 regular expressions for CEL's matches().
//
// Every glob is compiled against a finite alphabet: the characters that can appear at
// that place in a valid name (a namespace, an image path segment, a registry host, a
// tag). A glob token becomes the explicit set of alphabet characters that path.Match
// accepts for it, so the regex agrees with path.Match on every valid input by
// construction, character classes and escapes included. Inputs outside the alphabet are
// not valid names; the apiserver, NormalizeImage or the kubelet rejects them anyway.

// charset is a set of ASCII characters.
type charset [2]uint64

func setOf(chars string) charset {
	var s charset
	for i := 0; i < len(chars); i++ {
		s.add(chars[i])
	}
	return s
}

func (s *charset) add(c byte)           { s[c>>6] |= 1 << (c & 63) }
func (s charset) has(c byte) bool       { return c < 128 && s[c>>6]&(1<<(c&63)) != 0 }
func (s charset) and(o charset) charset { return charset{s[0] & o[0], s[1] & o[1]} }
func (s charset) or(o charset) charset  { return charset{s[0] | o[0], s[1] | o[1]} }
func (s charset) minus(o charset) charset {
	return charset{s[0] &^ o[0], s[1] &^ o[1]}
}
func (s charset) empty() bool { return s[0] == 0 && s[1] == 0 }

func (s charset) members() []byte {
	var m []byte
	for c := 0; c < 128; c++ {
		if s.has(byte(c)) {
			m = append(m, byte(c))
		}
	}
	return m
}

// upper adds the upper-case form of every letter and drops the lower-case one.
func (s charset) upper() charset {
	var u charset
	for _, c := range s.members() {
		if c >= 'a' && c <= 'z' {
			u.add(c - 'a' + 'A')
		}
	}
	return u
}

func classOf(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return 1
	case c >= 'a' && c <= 'z':
		return 2
	case c >= 'A' && c <= 'Z':
		return 3
	}
	return 0
}

func escapeClassChar(c byte) string {
	if strings.IndexByte(`\]-[^`, c) >= 0 {
		return `\` + string(c)
	}
	return string(c)
}

// regex renders the set as one regex atom: an escaped character or a class.
func (s charset) regex() string {
	m := s.members()
	if len(m) == 1 {
		return regexp.QuoteMeta(string(m))
	}
	var b strings.Builder
	b.WriteByte('[')
	for i := 0; i < len(m); {
		j := i
		for j+1 < len(m) && m[j+1] == m[j]+1 && classOf(m[i]) != 0 && classOf(m[j+1]) == classOf(m[i]) {
			j++
		}
		if j-i >= 2 {
			b.WriteString(escapeClassChar(m[i]) + "-" + escapeClassChar(m[j]))
		} else {
			for k := i; k <= j; k++ {
				b.WriteString(escapeClassChar(m[k]))
			}
		}
		i = j + 1
	}
	b.WriteByte(']')
	return b.String()
}

const (
	lower  = "abcdefghijklmnopqrstuvwxyz"
	upperL = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	digits = "0123456789"
)

var (
	// namespaceAlphabet: namespace names are DNS-1123 labels.
	namespaceAlphabet = setOf(lower + digits + "-")
	// pathAlphabet: repository path components are lower-case (distribution/reference).
	pathAlphabet = setOf(lower + digits + "._-")
	// nameAlphabet is a registry host's name without its port, lower-cased: hosts
	// compare case-insensitively, so host regexes run under (?i). IPv6 literals are
	// rendered apart.
	nameAlphabet = setOf(lower + digits + ".-")
	// tagAlphabet: [\w][\w.-]*; tags are case-sensitive.
	tagAlphabet = setOf(lower + upperL + digits + "_.-")

	dotOrColon = setOf(".:")
	upperSet   = setOf(upperL)
)

// token is one glob element: a set of characters, once or repeated (star).
type token struct {
	set  charset
	star bool
}

// globTokens splits a path.Match glob into tokens over alpha. The character set of each
// token is found by asking path.Match itself about every character of alpha.
func globTokens(g string, alpha charset) ([]token, error) {
	var ts []token
	for i := 0; i < len(g); {
		var text string
		switch g[i] {
		case '*':
			ts = append(ts, token{set: alpha.minus(setOf("/")), star: true})
			i++
			continue
		case '\\':
			if i+1 >= len(g) {
				return nil, fmt.Errorf("bad glob %q: trailing \\", g)
			}
			_, n := utf8.DecodeRuneInString(g[i+1:])
			text = g[i : i+1+n]
		case '[':
			j, err := classEnd(g, i)
			if err != nil {
				return nil, err
			}
			text = g[i:j]
		default:
			_, n := utf8.DecodeRuneInString(g[i:])
			text = g[i : i+n]
		}
		i += len(text)
		var set charset
		for _, c := range alpha.members() {
			if ok, err := path.Match(text, string(c)); err != nil {
				return nil, fmt.Errorf("bad glob %q: %w", g, err)
			} else if ok {
				set.add(c)
			}
		}
		ts = append(ts, token{set: set})
	}
	return ts, nil
}

// classEnd returns the index after the character class that starts at g[i] == '[',
// following path.Match's grammar.
func classEnd(g string, i int) (int, error) {
	bad := fmt.Errorf("bad glob %q: unclosed [", g)
	j := i + 1
	if j < len(g) && g[j] == '^' {
		j++
	}
	esc := func(j int) (int, error) {
		if j >= len(g) || g[j] == '-' || g[j] == ']' {
			return 0, bad
		}
		if g[j] == '\\' {
			j++
			if j >= len(g) {
				return 0, bad
			}
		}
		_, n := utf8.DecodeRuneInString(g[j:])
		return j + n, nil
	}
	for nrange := 0; ; nrange++ {
		if j < len(g) && g[j] == ']' && nrange > 0 {
			return j + 1, nil
		}
		var err error
		if j, err = esc(j); err != nil {
			return 0, err
		}
		if j < len(g) && g[j] == '-' {
			if j, err = esc(j + 1); err != nil {
				return 0, err
			}
		}
	}
}

// alternation joins regex alternatives; ok is false when there are none (the empty
// language). An empty alternative matches the empty string.
func alternation(alts []string) (string, bool) {
	seen := map[string]bool{}
	var uniq []string
	for _, a := range alts {
		if !seen[a] {
			seen[a] = true
			uniq = append(uniq, a)
		}
	}
	switch len(uniq) {
	case 0:
		return "", false
	case 1:
		return uniq[0], true
	}
	return "(?:" + strings.Join(uniq, "|") + ")", true
}

func renderTokens(ts []token) (string, bool) {
	var b strings.Builder
	for _, t := range ts {
		if t.set.empty() {
			if t.star {
				continue
			}
			return "", false
		}
		b.WriteString(t.set.regex())
		if t.star {
			b.WriteByte('*')
		}
	}
	return b.String(), true
}

// renderContaining renders the strings of ts that contain at least one character of c,
// split by the token that produces the first such character.
func renderContaining(ts []token, c charset) (string, bool) {
	var alts []string
	for i, t := range ts {
		hit := t.set.and(c)
		if hit.empty() {
			continue
		}
		pre := make([]token, i)
		for k := range pre {
			pre[k] = token{set: ts[k].set.minus(c), star: ts[k].star}
		}
		p, ok := renderTokens(pre)
		if !ok {
			continue
		}
		s, ok := renderTokens(ts[i+1:])
		if !ok {
			continue
		}
		mid := hit.regex()
		if t.star {
			if rest := t.set.minus(c); !rest.empty() {
				mid = rest.regex() + "*" + mid
			}
			mid += t.set.regex() + "*"
		}
		alts = append(alts, p+mid+s)
	}
	return alternation(alts)
}

// nfa runs a token list as a position automaton, for rendering a glob minus a finite
// set of words.
type nfa struct {
	ts    []token
	alpha charset
	need  charset // with needC, the string must contain a character of need
}

type positions []bool

func (a *nfa) start() positions {
	p := make(positions, len(a.ts)+1)
	p[0] = true
	return a.closure(p)
}

func (a *nfa) closure(p positions) positions {
	for i, t := range a.ts {
		if p[i] && t.star {
			p[i+1] = true
		}
	}
	return p
}

func (a *nfa) step(p positions, c byte) (positions, bool) {
	q := make(positions, len(p))
	any := false
	for i, t := range a.ts {
		if p[i] && t.set.has(c) {
			if t.star {
				q[i] = true
			} else {
				q[i+1] = true
			}
			any = true
		}
	}
	return a.closure(q), any
}

func (p positions) key() string {
	b := make([]byte, len(p))
	for i, v := range p {
		if v {
			b[i] = '1'
		} else {
			b[i] = '0'
		}
	}
	return string(b)
}

// from renders the strings accepted from positions p.
func (a *nfa) from(p positions, needC bool) (string, bool) {
	var alts []string
	for i := range p {
		if !p[i] || (i > 0 && p[i-1] && a.ts[i-1].star) {
			continue // covered by the star before it
		}
		var s string
		var ok bool
		if needC {
			s, ok = renderContaining(a.ts[i:], a.need)
		} else {
			s, ok = renderTokens(a.ts[i:])
		}
		if ok {
			alts = append(alts, s)
		}
	}
	return alternation(alts)
}

// excluding renders the strings accepted from p, minus the words (suffixes of the
// excluded strings still possible after what was read).
func (a *nfa) excluding(p positions, words []string, needC bool) (string, bool) {
	if len(words) == 0 {
		return a.from(p, needC)
	}
	var alts []string
	n := len(a.ts)
	var firsts charset
	hasEmpty := false
	for _, w := range words {
		if w == "" {
			hasEmpty = true
		} else {
			firsts.add(w[0])
		}
	}
	if p[n] && !hasEmpty && !needC {
		alts = append(alts, "")
	}
	for _, c := range firsts.members() {
		q, ok := a.step(p, c)
		if !ok {
			continue
		}
		var rest []string
		for _, w := range words {
			if w != "" && w[0] == c {
				rest = append(rest, w[1:])
			}
		}
		if sub, ok := a.excluding(q, rest, needC && !a.need.has(c)); ok {
			alts = append(alts, regexp.QuoteMeta(string(c))+sub)
		}
	}
	type group struct {
		set  charset
		q    positions
		need bool
	}
	groups := map[string]*group{}
	var order []string
	for _, c := range a.alpha.minus(firsts).members() {
		q, ok := a.step(p, c)
		if !ok {
			continue
		}
		need := needC && !a.need.has(c)
		k := fmt.Sprint(q.key(), need)
		g := groups[k]
		if g == nil {
			g = &group{q: q, need: need}
			groups[k] = g
			order = append(order, k)
		}
		g.set.add(c)
	}
	sort.Strings(order)
	for _, k := range order {
		g := groups[k]
		if sub, ok := a.from(g.q, g.need); ok {
			alts = append(alts, g.set.regex()+sub)
		}
	}
	return alternation(alts)
}

// globRegex renders a whole glob over alpha (no anchors).
func globRegex(g string, alpha charset) (string, bool, error) {
	ts, err := globTokens(g, alpha)
	if err != nil {
		return "", false, err
	}
	s, ok := renderTokens(ts)
	return s, ok, nil
}

// globMatch reports whether glob g matches s (g is validated).
func globMatch(g, s string) bool {
	ok, _ := path.Match(g, s)
	return ok
}

// Join joins regexes into one alternation; ok is false when there are none. An
// empty regex matches the empty string.
func Join(regexes []string) (string, bool) { return alternation(regexes) }

// Namespace renders namespace-name globs as one anchored regex, or ok false when no
// namespace name can match.
func Namespace(globs []string) (string, bool, error) {
	var alts []string
	for _, g := range globs {
		s, ok, err := globRegex(g, namespaceAlphabet)
		if err != nil {
			return "", false, err
		}
		if ok {
			alts = append(alts, s)
		}
	}
	s, ok := alternation(alts)
	if !ok {
		return "", false, nil
	}
	return "^" + s + "$", true, nil
}
