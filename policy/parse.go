package policy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// MaxDocumentBytes bounds one policy document. A policy ConfigMap is capped at 1 MiB by
// the apiserver; files get the same limit so that a stray binary file fails fast.
const MaxDocumentBytes = 1 << 20

// documentPath is the path shown for errors that concern a whole bare document.
const documentPath = "(document)"

// Parse reads one RuntimePolicy YAML or JSON document strictly: unknown and duplicate
// fields are errors that name the field. root prefixes every field path; it is nil for
// a bare document and data[policy.yaml] for a ConfigMap. Parse does not validate.
func Parse(data []byte, root *field.Path) (*RuntimePolicy, field.ErrorList) {
	rootStr := documentPath
	if root != nil {
		rootStr = root.String()
	}
	if len(data) > MaxDocumentBytes {
		return nil, field.ErrorList{field.TooLong(pathOrNil(root, rootStr), "", MaxDocumentBytes)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, field.ErrorList{field.Required(pathOrNil(root, rootStr), "a RuntimePolicy document (apiVersion: "+APIVersion+", kind: "+Kind+")")}
	}
	js, ferr := yamlToJSON(data, rootStr)
	if ferr != nil {
		return nil, field.ErrorList{ferr}
	}
	if !bytes.HasPrefix(bytes.TrimSpace(js), []byte("{")) {
		return nil, field.ErrorList{&field.Error{Type: field.ErrorTypeInvalid, Field: rootStr, BadValue: field.OmitValueType{}, Detail: "must be a YAML mapping with apiVersion, kind and spec"}}
	}
	p := &RuntimePolicy{}
	strict, err := sigsjson.UnmarshalStrict(js, p)
	if err != nil {
		return nil, field.ErrorList{typeError(root, rootStr, js, err)}
	}
	var errs field.ErrorList
	for _, se := range strict {
		errs = append(errs, strictError(root, se))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return p, nil
}

func pathOrNil(root *field.Path, rootStr string) *field.Path {
	if root != nil {
		return root
	}
	return field.NewPath(rootStr)
}

// strictError turns an unknown or duplicate field reported by sigs.k8s.io/json into a
// field error whose path includes root.
func strictError(root *field.Path, err error) *field.Error {
	path := ""
	var fe interface{ FieldPath() string }
	if errors.As(err, &fe) {
		path = fe.FieldPath()
	}
	full := path
	if root != nil {
		full = root.String() + "." + path
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "unknown field"):
		return &field.Error{Type: field.ErrorTypeForbidden, Field: full, BadValue: field.OmitValueType{},
			Detail: "unknown field; check its spelling (docs/policy.md lists every field)"}
	case strings.HasPrefix(msg, "duplicate field"):
		return &field.Error{Type: field.ErrorTypeDuplicate, Field: full, BadValue: field.OmitValueType{},
			Detail: "the field is given more than once; keep one"}
	default:
		return &field.Error{Type: field.ErrorTypeInvalid, Field: full, BadValue: field.OmitValueType{}, Detail: msg}
	}
}

// yamlToJSON converts YAML strictly: a key given twice in one mapping is an error, as
// it is for kubectl, rather than silently keeping the last value.
func yamlToJSON(data []byte, rootStr string) ([]byte, *field.Error) {
	js, err := yaml.YAMLToJSONStrict(data)
	if err == nil {
		return js, nil
	}
	msg := err.Error()
	if strings.Contains(msg, "already set in map") {
		detail := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(msg, "error converting YAML to JSON: "), "yaml: unmarshal errors:"))
		return nil, &field.Error{Type: field.ErrorTypeDuplicate, Field: rootStr, BadValue: field.OmitValueType{},
			Detail: detail + "; the field is given more than once, keep one"}
	}
	return nil, &field.Error{Type: field.ErrorTypeInvalid, Field: rootStr, BadValue: field.OmitValueType{}, Detail: "not valid YAML: " + msg}
}

var typeErrorRE = regexp.MustCompile(`cannot unmarshal (\w+) into Go (?:struct field \w+\.(\S+)|value) of type (\S+)`)

// typeError reports a value of the wrong type at its full field path. encoding/json
// names the field without list indices (spec.rules.priority), so the path is looked up
// in the document itself (spec.rules[3].priority).
func typeError(root *field.Path, rootStr string, js []byte, err error) *field.Error {
	fe := &field.Error{Type: field.ErrorTypeInvalid, Field: rootStr, BadValue: field.OmitValueType{}, Detail: typeErrorDetail(err)}
	m := typeErrorRE.FindStringSubmatch(err.Error())
	if m == nil || m[2] == "" {
		return fe
	}
	var tree any
	if json.Unmarshal(js, &tree) != nil {
		return fe
	}
	if p := locate(tree, strings.Split(m[2], "."), m[1], root); p != nil {
		fe.Field = p.String()
		fe.Detail = typeWant(m[3], m[1])
	}
	return fe
}

// locate finds the first value of JSON type kind at the dotted path, descending into
// lists on the way, and returns its path with list indices.
func locate(v any, dotted []string, kind string, p *field.Path) *field.Path {
	if list, ok := v.([]any); ok && (len(dotted) > 0 || kind != "array") {
		for i, e := range list {
			if found := locate(e, dotted, kind, indexPath(p, i)); found != nil {
				return found
			}
		}
		return nil
	}
	if len(dotted) == 0 {
		if jsonKind(v) == kind {
			return p
		}
		return nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	child, ok := obj[dotted[0]]
	if !ok {
		return nil
	}
	next := field.NewPath(dotted[0])
	if p != nil {
		next = p.Child(dotted[0])
	}
	return locate(child, dotted[1:], kind, next)
}

func indexPath(p *field.Path, i int) *field.Path {
	if p == nil {
		return field.NewPath("").Index(i)
	}
	return p.Index(i)
}

// jsonKind names a decoded JSON value's type as encoding/json's errors do.
func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

// typeWant says what a field of Go type want should hold instead of a JSON got.
func typeWant(want, got string) string {
	switch {
	case strings.Contains(want, "int"):
		want = "an integer"
	case strings.HasPrefix(want, "[]"):
		want = "a list"
	case strings.HasPrefix(want, "map") || strings.Contains(want, "."):
		want = "a mapping"
	case want == "string":
		want = "a string"
	case want == "bool":
		want = "true or false"
	}
	switch got {
	case "array":
		got = "list"
	case "object":
		got = "mapping"
	}
	return fmt.Sprintf("must be %s, not a %s", want, got)
}

// typeErrorDetail rewrites encoding/json's type errors in terms of the policy's fields.
func typeErrorDetail(err error) string {
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if m := typeErrorRE.FindStringSubmatch(msg); m != nil {
		if m[2] != "" {
			return "field " + m[2] + " " + typeWant(m[3], m[1])
		}
		return typeWant(m[3], m[1])
	}
	return msg
}

// Source is one policy with the name that qualifies its rules ("<source>/<rule>").
type Source struct {
	// Name is the ConfigMap's name, or the policy's metadata.name, or the file's base name.
	Name string
	// Origin says where the policy came from, for messages: "file.yaml (document 2)".
	Origin string
	// Root is the field path of the policy inside its document (data[policy.yaml] for a
	// ConfigMap, nil for a bare policy).
	Root   *field.Path
	Policy *RuntimePolicy
	// Namespace is the ConfigMap's namespace; empty for a bare policy.
	Namespace string
	// Team is the namespace of a team policy: a policy ConfigMap outside the isolator
	// namespace, which applies to that namespace's pods only and can only make them more
	// isolated. Empty for a cluster policy. Name is then "<namespace>/<configmap>".
	Team string
}

// AsTeam makes src the team policy of its namespace when that namespace is not
// isolatorNamespace, where the cluster policies live.
func (src *Source) AsTeam(isolatorNamespace string) {
	if src.Namespace != "" && src.Namespace != isolatorNamespace && src.Team == "" {
		src.Team = src.Namespace
		src.Name = src.Namespace + "/" + src.Name
	}
}

// QualifiedRule names a rule of this source as decisions report it.
func (s *Source) QualifiedRule(rule string) string { return s.Name + "/" + rule }

// DocumentError is a problem with one document of an input file.
type DocumentError struct {
	Origin string
	Errs   field.ErrorList
}

func (e *DocumentError) Error() string {
	var b strings.Builder
	for i, fe := range e.Errs {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Origin)
		b.WriteString(": ")
		b.WriteString(fe.Error())
	}
	return b.String()
}

// ParseConfigMap reads the RuntimePolicy a policy ConfigMap holds under data key
// policy.yaml; errors carry full field paths (data[policy.yaml].spec...). It does not
// validate. The source is named after the ConfigMap; see Source.AsTeam for ConfigMaps
// outside the isolator namespace.
func ParseConfigMap(namespace, name string, data map[string]string) (*Source, field.ErrorList) {
	root := field.NewPath("data").Key(ConfigMapKey)
	text, ok := data[ConfigMapKey]
	if !ok {
		return nil, field.ErrorList{field.Required(root, "a policy ConfigMap keeps its RuntimePolicy under data key "+ConfigMapKey)}
	}
	p, errs := Parse([]byte(text), root)
	if len(errs) > 0 {
		return nil, errs
	}
	return &Source{Name: name, Namespace: namespace, Origin: "ConfigMap " + namespace + "/" + name, Root: root, Policy: p}, nil
}

// envelope is the part of any Kubernetes-style document needed to tell what it is.
type envelope struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Data map[string]string `json:"data"`
}

// ReadSources reads every policy in a YAML stream: bare RuntimePolicy documents and
// ConfigMaps holding one under data[policy.yaml]. file names the stream in messages and
// names bare policies that have no metadata.name. Parse errors are returned per
// document; documents that parse are returned even when others fail. Names are not made
// unique here: Compile refuses two sources of the same name, because renaming one would
// make its rule names depend on the order of the input.
func ReadSources(file string, r io.Reader) ([]Source, []*DocumentError) {
	docs, err := SplitDocuments(r)
	if err != nil {
		return nil, []*DocumentError{{Origin: file, Errs: field.ErrorList{&field.Error{Type: field.ErrorTypeInvalid, Field: documentPath, BadValue: field.OmitValueType{}, Detail: err.Error()}}}}
	}
	base := strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	var out []Source
	var errs []*DocumentError
	for i, doc := range docs {
		origin := file
		if len(docs) > 1 {
			origin = file + " (document " + strconv.Itoa(i+1) + ")"
		}
		if items, ok := listItems(doc); ok {
			// kubectl get configmaps -o yaml prints a List.
			for j, item := range items {
				o, e := readOne(item, origin+" items["+strconv.Itoa(j)+"]", base)
				out, errs = append(out, o...), append(errs, e...)
			}
			continue
		}
		o, e := readOne(doc, origin, base)
		out, errs = append(out, o...), append(errs, e...)
	}
	return out, errs
}

func readOne(doc []byte, origin, base string) ([]Source, []*DocumentError) {
	src, ferrs := readSource(doc, origin, base)
	if len(ferrs) > 0 {
		return nil, []*DocumentError{{Origin: origin, Errs: ferrs}}
	}
	if src == nil {
		return nil, nil
	}
	return []Source{*src}, nil
}

// listItems returns the items of a List document (kind List or ConfigMapList).
func listItems(doc []byte) ([]json.RawMessage, bool) {
	var list struct {
		Kind  string            `json:"kind"`
		Items []json.RawMessage `json:"items"`
	}
	if yaml.Unmarshal(doc, &list) != nil || (list.Kind != "List" && list.Kind != "ConfigMapList") {
		return nil, false
	}
	return list.Items, true
}

// maxStreamBytes bounds a whole YAML stream of policies or pods.
const maxStreamBytes = 64 * MaxDocumentBytes

// errStreamTooLong is returned instead of silently cutting a stream (and the document
// it ends in) short.
var errStreamTooLong = fmt.Errorf("the stream is longer than %d MiB; split it into several files", maxStreamBytes>>20)

// cappedReader fails once more than n bytes were read.
type cappedReader struct {
	r io.Reader
	n int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if c.n < 0 {
		return 0, errStreamTooLong
	}
	if int64(len(p)) > c.n+1 {
		p = p[:c.n+1]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if c.n < 0 {
		return 0, errStreamTooLong
	}
	return n, err
}

// SplitDocuments splits a YAML stream into its non-empty documents.
func SplitDocuments(r io.Reader) ([][]byte, error) {
	yr := utilyaml.NewYAMLReader(bufio.NewReader(&cappedReader{r: r, n: maxStreamBytes}))
	var docs [][]byte
	for {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading YAML stream: %w", err)
		}
		if isBlankDocument(doc) {
			continue
		}
		docs = append(docs, doc)
	}
}

// isBlankDocument is true for a document holding only whitespace and comments.
func isBlankDocument(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			return false
		}
	}
	return true
}

func readSource(doc []byte, origin, fileBase string) (*Source, field.ErrorList) {
	js, ferr := yamlToJSON(doc, documentPath)
	if ferr != nil {
		return nil, field.ErrorList{ferr}
	}
	if !bytes.HasPrefix(bytes.TrimSpace(js), []byte("{")) {
		return nil, field.ErrorList{&field.Error{Type: field.ErrorTypeInvalid, Field: documentPath, BadValue: field.OmitValueType{},
			Detail: "must be a YAML mapping: a RuntimePolicy, or a ConfigMap holding one under data key " + ConfigMapKey}}
	}
	var env envelope
	if err := json.Unmarshal(js, &env); err != nil {
		return nil, field.ErrorList{typeError(nil, documentPath, js, err)}
	}
	switch {
	case env.Kind == "ConfigMap":
		if env.Metadata.Name == "" {
			return nil, field.ErrorList{field.Required(field.NewPath("metadata", "name"), "the ConfigMap's name qualifies its rules")}
		}
		src, errs := ParseConfigMap(env.Metadata.Namespace, env.Metadata.Name, env.Data)
		if len(errs) > 0 {
			return nil, errs
		}
		src.Origin = origin + " (ConfigMap " + env.Metadata.Name + ")"
		return src, nil
	case env.Kind == Kind || strings.HasPrefix(env.APIVersion, "isolator.dev/") || (env.Kind == "" && env.APIVersion == ""):
		p, errs := Parse(doc, nil)
		if len(errs) > 0 {
			return nil, errs
		}
		name := p.Metadata.Name
		if name == "" {
			name = fileBase
		}
		return &Source{Name: name, Origin: origin, Policy: p}, nil
	default:
		return nil, field.ErrorList{field.NotSupported(field.NewPath("kind"), env.Kind, []string{Kind, "ConfigMap"})}
	}
}
