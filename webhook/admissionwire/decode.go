package admissionwire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/bits"
	"slices"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/isolator-dev/isolator/policy"
)

// Decode decodes an AdmissionReview into the fields the decision needs, with
// exactly the result and errors of json.Unmarshal(body, &Review{}).
//
// The fast path walks the body once: it validates every byte as json.Unmarshal does, but
// skips the subtrees no decision reads (env, volumes, resources, managedFields, ...)
// without building anything, and fills only Review. Whatever it does not handle the
// way encoding/json would without doubt (invalid JSON, a type mismatch, a duplicate or
// case-folded key, an escaped key, very deep nesting) it hands to json.Unmarshal, which
// then decides and words the error. TestDecodeReviewDifferential and
// FuzzDecodeReviewDifferential hold the two to the same answers.
func Decode(body []byte) (Review, error) {
	d := reviewDecoder{b: body}
	review, err := d.review()
	if err == nil {
		return review, nil
	}
	return decodeSlow(body)
}

// decodeSlow is encoding/json, the reference. It is a function of its own so that its
// result escapes to the heap only on this path.
func decodeSlow(body []byte) (Review, error) {
	var review Review
	err := json.Unmarshal(body, &review)
	return review, err
}

// errSlowPath hands the body to encoding/json. It never reaches a client: the slow
// path returns encoding/json's own result.
var errSlowPath = errors.New("not decoded by the fast path")

// maxSkipDepth bounds the nesting the fast path skips over; deeper documents go to
// encoding/json, which enforces its own limit (10000) with its own error.
const maxSkipDepth = 512

// reviewDecoder reads one AdmissionReview from b; i is the read position.
type reviewDecoder struct {
	b []byte
	i int
}

// The JSON names of each level's fields. A key that is not one of them but equals one
// of them ignoring case would match in encoding/json: it goes to the slow path.
var (
	reviewKeys   = []string{"apiVersion", "kind", "request"}
	requestKeys  = []string{"uid", "resource", "subResource", "namespace", "operation", "object"}
	gvrKeys      = []string{"group", "version", "resource"}
	podKeys      = []string{"metadata", "spec"}
	metaKeys     = []string{"name", "generateName", "namespace", "labels", "annotations"}
	specKeys     = []string{"runtimeClassName", "hostNetwork", "hostPID", "hostIPC", "containers", "initContainers", "ephemeralContainers", "serviceAccountName"}
	containerKey = []string{"name", "image"}
)

// Common values, so that decoding them does not allocate.
var internedValues = []string{
	"admission.k8s.io/v1", "AdmissionReview", "CREATE", "UPDATE", "DELETE", "CONNECT",
	"", "v1", "pods", "status", "ephemeralcontainers", "binding", "eviction", "default",
}

func (d *reviewDecoder) review() (Review, error) {
	var r Review
	if null, err := d.objectStart(); err != nil || null {
		return r, errSlowPath // a top-level null or non-object is rare: encoding/json words it
	}
	err := d.fields(reviewKeys, func(i int) error {
		switch i {
		case 0:
			return d.str(&r.APIVersion, true)
		case 1:
			return d.str(&r.Kind, true)
		default:
			return d.request(&r.Request)
		}
	})
	if err == nil {
		err = d.end()
	}
	return r, err
}

func (d *reviewDecoder) request(p **Request) error {
	null, err := d.objectStart()
	if err != nil {
		return err
	}
	if null {
		*p = nil
		return nil
	}
	req := &Request{}
	*p = req
	return d.fields(requestKeys, func(i int) error {
		var s string
		switch i {
		case 0:
			err := d.str(&s, false)
			req.UID = types.UID(s)
			return err
		case 1:
			return d.gvr(&req.Resource)
		case 2:
			return d.str(&req.SubResource, true)
		case 3:
			return d.str(&req.Namespace, true)
		case 4:
			err := d.str(&s, true)
			req.Operation = admissionv1.Operation(s)
			return err
		default:
			return d.pod(&req.Object)
		}
	})
}

func (d *reviewDecoder) gvr(g *metav1.GroupVersionResource) error {
	return d.stringObject(gvrKeys, true, &g.Group, &g.Version, &g.Resource)
}

// stringObject reads an object whose wanted fields are all strings: the value of
// keys[i] goes to *dst[i]. intern says whether the values are common enough to look
// up in internedValues.
func (d *reviewDecoder) stringObject(keys []string, intern bool, dst ...*string) error {
	if null, err := d.objectStart(); err != nil || null {
		return err
	}
	return d.fields(keys, func(i int) error { return d.str(dst[i], intern) })
}

func (d *reviewDecoder) pod(p **policy.Pod) error {
	null, err := d.objectStart()
	if err != nil {
		return err
	}
	if null {
		*p = nil
		return nil
	}
	pod := &policy.Pod{}
	*p = pod
	return d.fields(podKeys, func(i int) error {
		if i == 0 {
			return d.meta(&pod.Metadata)
		}
		return d.spec(&pod.Spec)
	})
}

func (d *reviewDecoder) meta(m *policy.PodMeta) error {
	if null, err := d.objectStart(); err != nil || null {
		return err
	}
	return d.fields(metaKeys, func(i int) error {
		switch i {
		case 0:
			return d.str(&m.Name, false)
		case 1:
			return d.str(&m.GenerateName, false)
		case 2:
			return d.str(&m.Namespace, true)
		case 3:
			return d.stringMap(&m.Labels)
		default:
			return d.stringMap(&m.Annotations)
		}
	})
}

func (d *reviewDecoder) spec(s *policy.PodSpec) error {
	if null, err := d.objectStart(); err != nil || null {
		return err
	}
	return d.fields(specKeys, func(i int) error {
		switch i {
		case 0:
			return d.strPtr(&s.RuntimeClassName)
		case 1:
			return d.boolean(&s.HostNetwork)
		case 2:
			return d.boolean(&s.HostPID)
		case 3:
			return d.boolean(&s.HostIPC)
		case 4:
			return d.containers(&s.Containers)
		case 5:
			return d.containers(&s.InitContainers)
		case 6:
			return d.containers(&s.EphemeralContainers)
		default:
			return d.str(&s.ServiceAccountName, true)
		}
	})
}

// fields reads the members of an object whose '{' is already read, up to its '}'.
// The value of keys[i] is read by field(i); a key seen twice goes to the slow path
// (encoding/json merges repeated objects and lists in ways not worth copying), and
// every other key is validated and skipped.
func (d *reviewDecoder) fields(keys []string, field func(i int) error) error {
	var seen uint64
	for first := true; ; first = false {
		key, more, err := d.member(first)
		if err != nil || !more {
			return err
		}
		i := -1
		for j, k := range keys {
			if string(key) == k {
				i = j
				break
			}
		}
		switch {
		case i < 0:
			err = d.skipUnknown(key, keys)
		case seen&(1<<i) != 0:
			err = errSlowPath
		default:
			seen |= 1 << i
			err = field(i)
		}
		if err != nil {
			return err
		}
	}
}

// containers decodes a container list as encoding/json does: null is a nil slice, []
// an empty one, and a null element a zero Container.
func (d *reviewDecoder) containers(out *[]policy.Container) error {
	d.ws()
	switch d.peek() {
	case 'n':
		*out = nil
		return d.literal("null")
	case '[':
		d.i++
	default:
		return errSlowPath
	}
	// Decode into a scratch array and copy the result once: one allocation of the
	// right size instead of a growing slice.
	var scratch [16]policy.Container
	list := scratch[:0]
	for first := true; ; first = false {
		d.ws()
		if first && d.peek() == ']' {
			d.i++
			*out = []policy.Container{}
			return nil
		}
		if !first {
			switch d.peek() {
			case ',':
				d.i++
			case ']':
				d.i++
				*out = slices.Clone(list)
				return nil
			default:
				return errSlowPath
			}
		}
		list = append(list, policy.Container{})
		if err := d.container(&list[len(list)-1]); err != nil {
			return err
		}
	}
}

func (d *reviewDecoder) container(c *policy.Container) error {
	return d.stringObject(containerKey, false, &c.Name, &c.Image)
}

// stringMap decodes labels or annotations: null is a nil map, and a null value is "".
func (d *reviewDecoder) stringMap(out *map[string]string) error {
	null, err := d.objectStart()
	if err != nil {
		return err
	}
	if null {
		*out = nil
		return nil
	}
	m := make(map[string]string, 8)
	*out = m
	for first := true; ; first = false {
		key, more, err := d.member(first)
		if err != nil || !more {
			return err
		}
		if _, dup := m[string(key)]; dup {
			return errSlowPath // encoding/json's last-wins is easy, but rare enough to leave to it
		}
		var v string
		if err := d.str(&v, false); err != nil {
			return err
		}
		m[string(key)] = v
	}
}

// skipUnknown validates and skips the value of a key the decision does not read.
func (d *reviewDecoder) skipUnknown(key []byte, known []string) error {
	for _, k := range known {
		if len(k) == len(key) && bytes.EqualFold(key, []byte(k)) {
			return errSlowPath // encoding/json matches keys ignoring case
		}
	}
	return d.skipValue()
}

// objectStart reads '{' or null. Anything else is a type mismatch for encoding/json
// to report.
func (d *reviewDecoder) objectStart() (null bool, err error) {
	d.ws()
	switch d.peek() {
	case '{':
		d.i++
		return false, nil
	case 'n':
		return true, d.literal("null")
	}
	return false, errSlowPath
}

// member reads the next key of an object and its ':', or the closing '}' (more false).
// Keys with escapes or non-ASCII bytes go to the slow path: encoding/json folds case
// over all of Unicode.
func (d *reviewDecoder) member(first bool) (key []byte, more bool, err error) {
	d.ws()
	switch c := d.peek(); {
	case c == '}':
		d.i++
		return nil, false, nil
	case !first && c == ',':
		d.i++
		d.ws()
	case !first:
		return nil, false, errSlowPath
	}
	if d.peek() != '"' {
		return nil, false, errSlowPath
	}
	start := d.i + 1
	j := plainRun(d.b, start)
	if j >= len(d.b) || d.b[j] != '"' {
		return nil, false, errSlowPath
	}
	key = d.b[start:j]
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return nil, false, errSlowPath
		}
	}
	d.i = j + 1
	d.ws()
	if d.peek() != ':' {
		return nil, false, errSlowPath
	}
	d.i++
	return key, true, nil
}

// str decodes a JSON string into s; null leaves s alone, as in encoding/json. With
// common set, values that repeat in every review (apiVersion, operation, ...) come
// from a table instead of a new string.
func (d *reviewDecoder) str(s *string, common bool) error {
	d.ws()
	switch d.peek() {
	case '"':
	case 'n':
		return d.literal("null")
	default:
		return errSlowPath
	}
	start := d.i
	j := plainRun(d.b, start+1)
	if j < len(d.b) && d.b[j] == '"' && ascii(d.b[start+1:j]) {
		if common {
			*s = intern(d.b[start+1 : j])
		} else {
			*s = string(d.b[start+1 : j])
		}
		d.i = j + 1
		return nil
	}
	// Escapes or non-ASCII: find the end, then leave the unquoting (and the
	// replacement of invalid UTF-8) to encoding/json, the reference.
	end, ok := skipString(d.b, start)
	if !ok {
		return errSlowPath
	}
	d.i = end
	raw := d.b[start:end]
	if bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw) {
		*s = string(raw[1 : len(raw)-1])
		return nil
	}
	v, err := unquote(raw)
	if err == nil {
		*s = v
	}
	return err
}

// unquote leaves a string with escapes or invalid UTF-8 to encoding/json, the
// reference for both. It is a function of its own so that its result escapes to the
// heap only on this rare path.
func unquote(raw []byte) (string, error) {
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

func intern(b []byte) string {
	for _, v := range internedValues {
		if string(b) == v {
			return v
		}
	}
	return string(b)
}

func (d *reviewDecoder) strPtr(p **string) error {
	d.ws()
	if d.peek() == 'n' {
		*p = nil
		return d.literal("null")
	}
	s := new(string)
	if err := d.str(s, true); err != nil {
		return err
	}
	*p = s
	return nil
}

func (d *reviewDecoder) boolean(v *bool) error {
	d.ws()
	switch d.peek() {
	case 't':
		*v = true
		return d.literal("true")
	case 'f':
		*v = false
		return d.literal("false")
	case 'n':
		return d.literal("null")
	}
	return errSlowPath
}

// end accepts only whitespace after the top-level value.
func (d *reviewDecoder) end() error {
	d.ws()
	if d.i != len(d.b) {
		return errSlowPath
	}
	return nil
}

func (d *reviewDecoder) peek() byte {
	if d.i < len(d.b) {
		return d.b[d.i]
	}
	return 0
}

func (d *reviewDecoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

func (d *reviewDecoder) literal(lit string) error {
	if len(d.b)-d.i < len(lit) || string(d.b[d.i:d.i+len(lit)]) != lit {
		return errSlowPath
	}
	d.i += len(lit)
	return nil
}

// skipValue validates one JSON value, as strictly as encoding/json's scanner, and
// moves past it.
func (d *reviewDecoder) skipValue() error {
	i, ok := skipValue(d.b, d.i)
	if !ok {
		return errSlowPath
	}
	d.i = i
	return nil
}

// skipValue returns the position after the JSON value at b[i:], or false when it is
// not valid JSON. It keeps its nesting in a bit stack (1 = object), so a deep document
// costs no memory, and works on local positions: this loop is where the decoder spends
// most of its time.
func skipValue(b []byte, i int) (int, bool) {
	var stack [maxSkipDepth / 64]uint64
	depth := 0
	ok := true
	for {
		// A value is expected here.
		i = skipWS(b, i)
		if i >= len(b) {
			return i, false
		}
		switch c := b[i]; {
		case c == '"':
			i, ok = skipString(b, i)
		case c == '{':
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == '}' {
				i++
				break
			}
			if depth == maxSkipDepth {
				return i, false
			}
			stack[depth/64] |= 1 << (depth % 64)
			depth++
			if i, ok = skipKey(b, i); !ok {
				return i, false
			}
			continue
		case c == '[':
			i = skipWS(b, i+1)
			if i < len(b) && b[i] == ']' {
				i++
				break
			}
			if depth == maxSkipDepth {
				return i, false
			}
			stack[depth/64] &^= 1 << (depth % 64)
			depth++
			continue
		case c == '-' || (c >= '0' && c <= '9'):
			i, ok = skipNumber(b, i)
		case c == 't':
			i, ok = skipLiteral(b, i, "true")
		case c == 'f':
			i, ok = skipLiteral(b, i, "false")
		case c == 'n':
			i, ok = skipLiteral(b, i, "null")
		default:
			return i, false
		}
		if !ok {
			return i, false
		}
		// A value ended: close containers until one continues with ','.
		for {
			if depth == 0 {
				return i, true
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return i, false
			}
			inObject := stack[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			c := b[i]
			if c == ',' {
				if inObject {
					if i, ok = skipKey(b, skipWS(b, i+1)); !ok {
						return i, false
					}
				} else {
					i++
				}
				break
			}
			if (inObject && c == '}') || (!inObject && c == ']') {
				i++
				depth--
				continue
			}
			return i, false
		}
	}
}

// skipKey moves past an object key at b[i] and its ':'.
func skipKey(b []byte, i int) (int, bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	i, ok := skipString(b, i)
	if !ok {
		return i, false
	}
	i = skipWS(b, i)
	if i >= len(b) || b[i] != ':' {
		return i, false
	}
	return i + 1, true
}

func skipWS(b []byte, i int) int {
	for i < len(b) && b[i] <= ' ' && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

func skipLiteral(b []byte, i int, lit string) (int, bool) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, false
	}
	return i + len(lit), true
}

// skipString moves past the string whose opening quote is at b[i], checking its
// escapes and rejecting control characters as encoding/json does. Like encoding/json,
// it accepts any other byte, valid UTF-8 or not.
func skipString(b []byte, i int) (int, bool) {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	j := i + 1
	for {
		// plainRun, inlined by hand: most strings end within the first eight bytes.
		for j+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[j:])
			q := x ^ (lo * '"')
			s := x ^ (lo * '\\')
			if m := (((x - lo*0x20) &^ x) | ((q - lo) &^ q) | ((s - lo) &^ s)) & hi; m != 0 {
				j += bits.TrailingZeros64(m) / 8
				break
			}
			j += 8
		}
		for j < len(b) && (b[j] >= 0x80 || plainStringByte[b[j]]) {
			j++
		}
		if j >= len(b) {
			return j, false
		}
		switch b[j] {
		case '"':
			return j + 1, true
		case '\\':
			if j+1 >= len(b) {
				return j, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) {
					return j, false
				}
				for _, h := range b[j+2 : j+6] {
					if !isHex(h) {
						return j, false
					}
				}
				j += 6
			default:
				return j, false
			}
		default: // a control character
			return j, false
		}
	}
}

// plainRun returns the position of the first '"', '\\' or control character in b[j:],
// or len(b). It tests eight bytes at a time: with L = 0x01 in every byte and H = 0x80,
// (x - n*L) &^ x & H flags the bytes of x below n, and (y - L) &^ y & H with
// y = x ^ c*L the bytes equal to c; a flag can be spurious only above a true one, so
// the lowest flag is exact.
func plainRun(b []byte, j int) int {
	const lo, hi = 0x0101010101010101, 0x8080808080808080
	for j+8 <= len(b) {
		x := binary.LittleEndian.Uint64(b[j:])
		q := x ^ (lo * '"')
		s := x ^ (lo * '\\')
		m := ((x - lo*0x20) &^ x) | ((q - lo) &^ q) | ((s - lo) &^ s)
		if m &= hi; m != 0 {
			return j + bits.TrailingZeros64(m)/8
		}
		j += 8
	}
	for j < len(b) && (b[j] >= 0x80 || plainStringByte[b[j]]) {
		j++
	}
	return j
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// skipNumber moves past a number in JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, j int) (int, bool) {
	if j < len(b) && b[j] == '-' {
		j++
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		j = digits(b, j)
	default:
		return j, false
	}
	if j < len(b) && b[j] == '.' {
		j++
		if j >= len(b) || b[j] < '0' || b[j] > '9' {
			return j, false
		}
		j = digits(b, j)
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			j++
		}
		if j >= len(b) || b[j] < '0' || b[j] > '9' {
			return j, false
		}
		j = digits(b, j)
	}
	return j, true
}

func digits(b []byte, j int) int {
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	return j
}

// plainStringByte marks the ASCII bytes a string holds as they are: not a quote, a
// backslash or a control character.
var plainStringByte = func() (s [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		if c != '"' && c != '\\' {
			s[c] = true
		}
	}
	return s
}()

func ascii(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
