package policy

import (
	"bufio"
	"bytes"
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
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, field.ErrorList{&field.Error{Type: field.ErrorTypeInvalid, Field: rootStr, BadValue: field.OmitValueType{}, Detail: "not valid YAML: " + err.Error()}}
	}
	if bytes.HasPrefix(bytes.TrimSpace(js), []byte("null")) || !bytes.HasPrefix(bytes.TrimSpace(js), []byte("{")) {
		return nil, field.ErrorList{&field.Error{Type: field.ErrorTypeInvalid, Field: rootStr, BadValue: field.OmitValueType{}, Detail: "must be a YAML mapping with apiVersion, kind and spec"}}
	}
	p := &RuntimePolicy{}
	strict, err := sigsjson.UnmarshalStrict(js, p)
	if err != nil {
		return nil, field.ErrorList{&field.Error{Type: field.ErrorTypeInvalid, Field: rootStr, BadValue: field.OmitValueType{}, Detail: typeErrorDetail(err)}}
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

var typeErrorRE = regexp.MustCompile(`cannot unmarshal (\w+) into Go (?:struct field \w+\.(\S+)|value) of type (\S+)`)

// typeErrorDetail rewrites encoding/json's type errors in terms of the policy's fields.
func typeErrorDetail(err error) string {
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if m := typeErrorRE.FindStringSubmatch(msg); m != nil {
		want := m[3]
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
		if m[2] != "" {
			return fmt.Sprintf("field %s must be %s, not a %s", m[2], want, m[1])
		}
		return fmt.Sprintf("must be %s, not a %s", want, m[1])
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
		src, ferrs := readSource(doc, origin, base)
		if len(ferrs) > 0 {
			errs = append(errs, &DocumentError{Origin: origin, Errs: ferrs})
			continue
		}
		if src == nil {
			continue
		}
		out = append(out, *src)
	}
	return out, errs
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
	var env envelope
	if err := yaml.Unmarshal(doc, &env); err != nil {
		return nil, field.ErrorList{&field.Error{Type: field.ErrorTypeInvalid, Field: documentPath, BadValue: field.OmitValueType{}, Detail: "not valid YAML: " + err.Error()}}
	}
	switch {
	case env.Kind == "ConfigMap":
		root := field.NewPath("data").Key(ConfigMapKey)
		text, ok := env.Data[ConfigMapKey]
		if !ok {
			return nil, field.ErrorList{field.Required(root, "a policy ConfigMap keeps its RuntimePolicy under data key "+ConfigMapKey)}
		}
		if env.Metadata.Name == "" {
			return nil, field.ErrorList{field.Required(field.NewPath("metadata", "name"), "the ConfigMap's name qualifies its rules")}
		}
		p, errs := Parse([]byte(text), root)
		if len(errs) > 0 {
			return nil, errs
		}
		return &Source{Name: env.Metadata.Name, Origin: origin + " (ConfigMap " + env.Metadata.Name + ")", Root: root, Policy: p}, nil
	case env.Kind == Kind || env.APIVersion == APIVersion || (env.Kind == "" && env.APIVersion == ""):
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
