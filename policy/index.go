package policy

import (
	"math/bits"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// ruleIndex finds the candidate rules for a pod without scanning them all. Every rule
// is filed under one condition it requires (a namespace name or name prefix, a label,
// an image prefix), so a pod that lacks that key can't match the rule and never looks
// at it. Of the conditions a rule requires, the one shared by the fewest rules is
// chosen, which keeps every bucket short. Rules with no indexable condition sit in scan.
// Buckets hold rule positions in resolution order, so the first match in a bucket is
// the best in it.
type ruleIndex struct {
	// namespaces maps the literal prefix of a namespace glob (a literal name is its own
	// prefix) to rules; nsLens has bit n set when some key is n bytes long, so a lookup
	// tries only the prefix lengths that exist.
	namespaces prefixTable
	nsLens     uint64
	podLabels  labelIndex
	nsLabels   labelIndex
	// images maps the literal leading segments of anyImage patterns to rules;
	// imageDepths has bit n set when some key has n segments.
	images      prefixTable
	imageDepths uint64
	// firstImages is the same for allImages patterns, looked up with the first image
	// only: every image must match, so the first one must too.
	firstImages prefixTable
	firstDepths uint64
	scan        []int32
	size        int
	audits      int // how many of the rules are Audit rules
}

// prefixTable maps strings to rule buckets. Its filter answers "certainly not here"
// for most strings at the cost of a few instructions, so trying every prefix of a name,
// or every label of a pod, rarely needs to hash a string at all.
type prefixTable struct {
	m      map[string][]int32
	filter keyFilter
}

func (t *prefixTable) add(k string, pos int32) {
	if t.m == nil {
		t.m = map[string][]int32{}
	}
	t.m[k] = appendPos(t.m[k], pos)
	t.filter.add(k)
}

func (t *prefixTable) lookup(k string) []int32 {
	if !t.filter.mayHave(k) {
		return nil
	}
	return t.m[k]
}

// keyFilter is a one-hash Bloom filter of 4,096 bits on a string's length and its first
// and last bytes. Index keys differ in those often enough (team-3 and team-3-dev, app
// and app.kubernetes.io/name) that most misses never reach a map.
type keyFilter [64]uint64

func filterBit(s string) uint {
	n := uint(len(s))
	if n == 0 {
		return 0
	}
	h := n*0x9E3779B1 ^ uint(s[0])*0x85EBCA77 ^ uint(s[n-1])*0xC2B2AE3D
	return (h ^ h>>13 ^ h>>26) & 4095
}

func (f *keyFilter) add(s string) {
	b := filterBit(s)
	f[b>>6] |= 1 << (b & 63)
}

func (f *keyFilter) mayHave(s string) bool {
	b := filterBit(s)
	return f[b>>6]&(1<<(b&63)) != 0
}

// pairBit combines the bits of a label's key and value.
func pairBit(k, v string) uint { return (filterBit(k)*0x2545F491 ^ filterBit(v)) & 4095 }

func (f *keyFilter) addPair(k, v string) {
	b := pairBit(k, v)
	f[b>>6] |= 1 << (b & 63)
}

func (f *keyFilter) mayHavePair(k, v string) bool {
	b := pairBit(k, v)
	return f[b>>6]&(1<<(b&63)) != 0
}

// labelIndex files rules under label keys. keys lists the keys of byKey, so that a
// lookup can walk them without starting a map iteration (which draws a random number).
type labelIndex struct {
	byKey   map[string]*labelBucket
	keys    []string
	buckets []*labelBucket // buckets[i] is byKey[keys[i]]
	filter  keyFilter      // over keys
	values  keyFilter      // over key=value pairs
}

// labelBucket holds the rules filed under one label key: by the value they require
// (Equals, In) or for any value (Exists).
type labelBucket struct {
	values map[string][]int32
	exists []int32
}

func (l *labelIndex) bucket(key string) *labelBucket {
	b := l.byKey[key]
	if b == nil {
		b = &labelBucket{values: map[string][]int32{}}
		l.byKey[key] = b
		l.keys = append(l.keys, key)
		l.buckets = append(l.buckets, b)
		l.filter.add(key)
	}
	return b
}

type indexKind uint8

const (
	kindNamespace indexKind = iota
	kindPodLabel
	kindNsLabel
	kindImage
	kindPodKey
	kindNsKey
	kindFirstImage
)

type indexKey struct {
	kind indexKind
	k, v string
}

// candidate is one condition a rule requires: the pod must have one of the keys.
type candidate []indexKey

// maxIndexed bounds namespace prefix lengths and image prefix depths to the bits of a
// uint64. Namespace names are at most 63 bytes, so a longer prefix can't match anyway.
const maxIndexed = 63

// candidates lists the indexable conditions of a rule.
func (c *compiledRule) candidates() []candidate {
	var out []candidate
	if len(c.namespaces) > 0 {
		var cand candidate
		for _, g := range c.namespaces {
			if g.prefix == "" || len(g.prefix) > maxIndexed {
				cand = nil
				break
			}
			cand = append(cand, indexKey{kind: kindNamespace, k: g.prefix})
		}
		if cand != nil {
			out = append(out, cand)
		}
	}
	out = appendSelector(out, c.podSel, kindPodLabel, kindPodKey)
	out = appendSelector(out, c.nsSel, kindNsLabel, kindNsKey)
	out = appendImages(out, c.anyImage, kindImage)
	out = appendImages(out, c.allImages, kindFirstImage)
	return out
}

func appendSelector(out []candidate, sel labels.Selector, kvKind, keyKind indexKind) []candidate {
	if sel == nil {
		return out
	}
	reqs, selectable := sel.Requirements()
	if !selectable {
		return out
	}
	for _, r := range reqs {
		switch r.Operator() {
		case selection.Equals, selection.DoubleEquals, selection.In:
			var cand candidate
			for _, v := range r.ValuesUnsorted() {
				cand = append(cand, indexKey{kind: kvKind, k: r.Key(), v: v})
			}
			out = append(out, cand)
		case selection.Exists:
			out = append(out, candidate{{kind: keyKind, k: r.Key()}})
		}
	}
	return out
}

func appendImages(out []candidate, ps []imagePattern, kind indexKind) []candidate {
	if len(ps) == 0 {
		return out
	}
	var cand candidate
	for _, p := range ps {
		if p.prefix == "" || segmentCount(p.prefix) > maxIndexed {
			return out
		}
		cand = append(cand, indexKey{kind: kind, k: p.prefix})
	}
	return append(out, cand)
}

func segmentCount(name string) int { return strings.Count(name, "/") + 1 }

// buildIndex files the rules at positions (ascending) into a new index.
func buildIndex(rules []compiledRule, positions []int32) ruleIndex {
	ix := ruleIndex{
		podLabels: labelIndex{byKey: map[string]*labelBucket{}},
		nsLabels:  labelIndex{byKey: map[string]*labelBucket{}},
		size:      len(positions),
	}
	cands := make([][]candidate, len(positions))
	counts := map[indexKey]int{}
	for i, pos := range positions {
		if rules[pos].audit {
			ix.audits++
		}
		cands[i] = rules[pos].candidates()
		for _, cand := range cands[i] {
			for _, k := range cand {
				counts[k]++
			}
		}
	}
	for i, pos := range positions {
		var best candidate
		bestCost := -1
		for _, cand := range cands[i] {
			cost := 0
			for _, k := range cand {
				cost += counts[k]
			}
			if bestCost < 0 || cost < bestCost {
				best, bestCost = cand, cost
			}
		}
		if best == nil {
			ix.scan = append(ix.scan, pos)
			continue
		}
		for _, k := range best {
			switch k.kind {
			case kindNamespace:
				ix.namespaces.add(k.k, pos)
				ix.nsLens |= 1 << len(k.k)
			case kindImage:
				ix.images.add(k.k, pos)
				ix.imageDepths |= 1 << segmentCount(k.k)
			case kindFirstImage:
				ix.firstImages.add(k.k, pos)
				ix.firstDepths |= 1 << segmentCount(k.k)
			default:
				ix.fileLabel(k, pos)
			}
		}
	}
	return ix
}

func (ix *ruleIndex) fileLabel(k indexKey, pos int32) {
	switch k.kind {
	case kindPodLabel:
		appendUnique(ix.podLabels.bucket(k.k).values, k.v, pos)
		ix.podLabels.values.addPair(k.k, k.v)
	case kindPodKey:
		b := ix.podLabels.bucket(k.k)
		b.exists = appendPos(b.exists, pos)
	case kindNsLabel:
		appendUnique(ix.nsLabels.bucket(k.k).values, k.v, pos)
		ix.nsLabels.values.addPair(k.k, k.v)
	case kindNsKey:
		b := ix.nsLabels.bucket(k.k)
		b.exists = appendPos(b.exists, pos)
	}
}

// appendPos appends pos unless it is already last (a rule files each key once, but
// In [a, a] or namespaces [x, x] repeat one).
func appendPos(b []int32, pos int32) []int32 {
	if n := len(b); n > 0 && b[n-1] == pos {
		return b
	}
	return append(b, pos)
}

func appendUnique(m map[string][]int32, k string, pos int32) { m[k] = appendPos(m[k], pos) }

// search is one lookup: the best (lowest) matching position found so far.
// Enforce and audit rules share one index, so a pod's labels and names are looked up
// once for both.
type search struct {
	rules []compiledRule
	f     *Facts
	// enforce and audit are the best matching positions found so far; len(rules)
	// while none is found, and -1 for audit when the index holds no audit rule.
	enforce, audit int32
}

// try checks a bucket in order until neither mode can improve: a later position can
// only be a worse match.
func (s *search) try(bucket []int32) {
	for _, pos := range bucket {
		if pos >= s.enforce && pos >= s.audit {
			return
		}
		r := &s.rules[pos]
		if r.audit {
			if pos < s.audit && r.matches(s.f) {
				s.audit = pos
			}
		} else if pos < s.enforce && r.matches(s.f) {
			s.enforce = pos
		}
	}
}

// labels tries the buckets of every label the object carries. It walks whichever of
// the index's keys and the object's labels is shorter, so a policy with many label keys
// costs a pod with few labels nothing, and the other way round.
func (s *search) labels(ix *labelIndex, set map[string]string) {
	if len(ix.keys) <= len(set) {
		for i, k := range ix.keys {
			if v, ok := set[k]; ok {
				s.tryLabel(ix, ix.buckets[i], k, v)
			}
		}
		return
	}
	for k, v := range set {
		if !ix.filter.mayHave(k) {
			continue
		}
		if b := ix.byKey[k]; b != nil {
			s.tryLabel(ix, b, k, v)
		}
	}
}

// tryLabel tries the rules filed under one label of the object.
func (s *search) tryLabel(ix *labelIndex, b *labelBucket, k, v string) {
	s.try(b.exists)
	if ix.values.mayHavePair(k, v) {
		s.try(b.values[v])
	}
}

// prefixes tries the bucket of every leading run of whole segments of name whose
// depth some key has: "a/b/c" gives "a", "a/b" and "a/b/c".
func (s *search) prefixes(t *prefixTable, depths uint64, name string) {
	depth, end := 1, 0
	for depth <= maxIndexed {
		i := strings.IndexByte(name[end:], '/')
		if i < 0 {
			break
		}
		end += i
		if depths&(1<<depth) != 0 {
			s.try(t.lookup(name[:end]))
		}
		end++
		depth++
	}
	if depth <= maxIndexed && depths&(1<<depth) != 0 {
		s.try(t.lookup(name))
	}
}

// best returns the positions of the first matching Enforce and Audit rules in
// resolution order, each -1 when none matches.
func (ix *ruleIndex) best(rules []compiledRule, f *Facts) (enforce, audit int32) {
	if ix.size == 0 {
		return -1, -1
	}
	none := int32(len(rules))
	s := search{rules: rules, f: f, enforce: none, audit: -1}
	if ix.audits > 0 {
		s.audit = none
	}
	if ix.nsLens != 0 {
		ns := f.Namespace
		lens := ix.nsLens
		if len(ns) < maxIndexed {
			lens &= 1<<(len(ns)+1) - 1
		}
		for ; lens != 0; lens &= lens - 1 {
			s.try(ix.namespaces.lookup(ns[:bits.TrailingZeros64(lens)]))
		}
	}
	if len(ix.podLabels.keys) > 0 && len(f.PodLabels) > 0 {
		s.labels(&ix.podLabels, f.PodLabels)
	}
	if len(ix.nsLabels.keys) > 0 && len(f.NamespaceLabels) > 0 {
		s.labels(&ix.nsLabels, f.NamespaceLabels)
	}
	if ix.imageDepths != 0 {
		for i := range f.Images {
			s.prefixes(&ix.images, ix.imageDepths, f.Images[i].Name)
		}
	}
	if ix.firstDepths != 0 && len(f.Images) > 0 {
		s.prefixes(&ix.firstImages, ix.firstDepths, f.Images[0].Name)
	}
	s.try(ix.scan)
	if s.enforce == none {
		s.enforce = -1
	}
	if s.audit == none {
		s.audit = -1
	}
	return s.enforce, s.audit
}
