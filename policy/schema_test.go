package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"
)

// enums are the allowed values of the policy's named string types.
var enums = map[reflect.Type][]string{
	reflect.TypeFor[Isolation]():          {string(IsolationVM), string(IsolationKernel), string(IsolationContainer)},
	reflect.TypeFor[UnknownClassPolicy](): {string(UnknownAsContainer), string(UnknownDeny)},
	reflect.TypeFor[Mode]():               {string(ModeEnforce), string(ModeAudit)},
	reflect.TypeFor[UserClassPolicy]():    {string(UserClassDeny), string(UserClassReplace)},
}

// comments reads the doc comments of the types and fields in types.go.
func comments(t *testing.T) (types map[string]string, fields map[string]string) {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "types.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	types, fields = map[string]string{}, map[string]string{}
	clean := func(s string) string { return strings.Join(strings.Fields(s), " ") }
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.TYPE {
			continue
		}
		for _, spec := range g.Specs {
			ts := spec.(*ast.TypeSpec)
			types[ts.Name.Name] = clean(g.Doc.Text())
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				continue
			}
			for _, fl := range st.Fields.List {
				for _, n := range fl.Names {
					fields[ts.Name.Name+"."+n.Name] = clean(fl.Doc.Text())
				}
			}
		}
	}
	return types, fields
}

// schemaGen renders Go types as JSON Schema.
type schemaGen struct {
	typeDocs, fieldDocs map[string]string
	defs                map[string]any
}

func (g *schemaGen) schema(t reflect.Type) map[string]any {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if values, ok := enums[t]; ok {
		return map[string]any{"type": "string", "enum": values}
	}
	switch t {
	case reflect.TypeFor[metav1.LabelSelector]():
		return map[string]any{"$ref": "#/$defs/LabelSelector"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]any{"type": "string"}
	case reflect.Bool:
		return map[string]any{"type": "boolean"}
	case reflect.Int32:
		return map[string]any{"type": "integer", "minimum": -1 << 31, "maximum": 1<<31 - 1}
	case reflect.Slice:
		return map[string]any{"type": "array", "items": g.schema(t.Elem())}
	case reflect.Struct:
		if _, done := g.defs[t.Name()]; !done {
			g.defs[t.Name()] = nil // recursion guard
			g.defs[t.Name()] = g.object(t)
		}
		return map[string]any{"$ref": "#/$defs/" + t.Name()}
	}
	panic("no schema for " + t.String())
}

func (g *schemaGen) object(t reflect.Type) map[string]any {
	props := map[string]any{}
	var required []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		s := g.schema(f.Type)
		if d := g.fieldDocs[t.Name()+"."+f.Name]; d != "" {
			if _, isRef := s["$ref"]; isRef {
				s = map[string]any{"allOf": []any{s}}
			}
			s["description"] = d
		}
		props[name] = s
		if !strings.Contains(opts, "omitempty") {
			required = append(required, name)
		}
	}
	o := map[string]any{"type": "object", "properties": props, "additionalProperties": false}
	if len(required) > 0 {
		o["required"] = required
	}
	if d := g.typeDocs[t.Name()]; d != "" {
		o["description"] = d
	}
	return o
}

// generateSchema builds the schema of a policy file from the types in types.go.
func generateSchema(t *testing.T) []byte {
	t.Helper()
	typeDocs, fieldDocs := comments(t)
	g := &schemaGen{typeDocs: typeDocs, fieldDocs: fieldDocs, defs: map[string]any{}}
	g.schema(reflect.TypeFor[RuntimePolicy]())
	rp := g.defs["RuntimePolicy"].(map[string]any)
	props := rp["properties"].(map[string]any)
	props["apiVersion"] = map[string]any{"enum": APIVersions, "description": "The policy's version; " + APIVersionV1Alpha2 + " adds isolation tiers, unknownRuntimeClasses and rule exclusions."}
	props["kind"] = map[string]any{"const": Kind}
	g.defs["LabelSelector"] = map[string]any{
		"type":                 "object",
		"description":          "A Kubernetes label selector: every matchLabels pair and every matchExpressions entry must hold.",
		"additionalProperties": false,
		"properties": map[string]any{
			"matchLabels": map[string]any{"type": "object", "additionalProperties": map[string]any{"type": "string"}},
			"matchExpressions": map[string]any{"type": "array", "items": map[string]any{
				"type": "object", "additionalProperties": false, "required": []string{"key", "operator"},
				"properties": map[string]any{
					"key":      map[string]any{"type": "string"},
					"operator": map[string]any{"enum": []string{"In", "NotIn", "Exists", "DoesNotExist"}},
					"values":   map[string]any{"type": "array", "items": map[string]any{"type": "string"}},
				},
			}},
		},
	}
	g.defs["PolicyConfigMap"] = map[string]any{
		"type":        "object",
		"description": "A policy ConfigMap: labelled " + PolicyLabel + `: "true", with the RuntimePolicy under ` + ConfigMapKey + ". Check the policy itself with isolator policy validate, or keep it in its own file with this schema.",
		"required":    []string{"apiVersion", "kind", "metadata", "data"},
		"properties": map[string]any{
			"apiVersion": map[string]any{"const": "v1"},
			"kind":       map[string]any{"const": "ConfigMap"},
			"metadata": map[string]any{
				"type": "object", "required": []string{"name", "labels"},
				"properties": map[string]any{
					"name":      map[string]any{"type": "string"},
					"namespace": map[string]any{"type": "string"},
					"labels": map[string]any{
						"type": "object", "required": []string{PolicyLabel},
						"properties": map[string]any{PolicyLabel: map[string]any{"const": "true", "description": "Without this label isolator ignores the ConfigMap."}},
					},
				},
			},
			"data": map[string]any{
				"type": "object", "required": []string{ConfigMapKey},
				"properties": map[string]any{ConfigMapKey: map[string]any{"type": "string", "description": "The RuntimePolicy, as YAML."}},
			},
		},
	}
	root := map[string]any{
		"$schema":     "https://json-schema.org/draft/2020-12/schema",
		"$id":         SchemaURL,
		"title":       "isolator RuntimePolicy",
		"description": "An isolator policy file: a RuntimePolicy, or a policy ConfigMap holding one (docs/policy.md). Generated from policy/types.go.",
		"if":          map[string]any{"properties": map[string]any{"kind": map[string]any{"const": "ConfigMap"}}, "required": []string{"kind"}},
		"then":        map[string]any{"$ref": "#/$defs/PolicyConfigMap"},
		"else":        map[string]any{"$ref": "#/$defs/RuntimePolicy"},
		"$defs":       g.defs,
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(root); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestSchemaIsCurrent: the committed schema is what the types generate. After changing
// types.go, run UPDATE_SCHEMA=1 go test ./policy -run TestSchemaIsCurrent.
func TestSchemaIsCurrent(t *testing.T) {
	got := generateSchema(t)
	if os.Getenv("UPDATE_SCHEMA") == "1" {
		if err := os.WriteFile("runtimepolicy.schema.json", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, Schema) {
		t.Fatal("runtimepolicy.schema.json is not what policy/types.go generates: run UPDATE_SCHEMA=1 go test ./policy -run TestSchemaIsCurrent, and commit it")
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(SchemaURL, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaURL)
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	return s
}

// asJSONValue turns a YAML document into the values a JSON Schema validator takes.
func asJSONValue(t *testing.T, doc []byte) any {
	t.Helper()
	data, err := yaml.YAMLToJSON(doc)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func parseAndValidate(doc string) field.ErrorList {
	p, errs := Parse([]byte(doc), nil)
	if len(errs) > 0 {
		return errs
	}
	return Validate(p, nil)
}

// TestSchemaAgreesWithParse: the schema accepts every example policy ConfigMap and the
// policy inside it, and refuses what Parse refuses for its shape, naming the place.
func TestSchemaAgreesWithParse(t *testing.T) {
	s := compileSchema(t)
	files, err := filepath.Glob("../manifests/examples/*.yaml")
	more, err2 := filepath.Glob("../manifests/examples/*/*.yaml")
	if err != nil || err2 != nil || len(files) == 0 {
		t.Fatalf("no examples: %v %v", err, err2)
	}
	files = append(files, more...)
	n := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			var cm struct {
				Kind string            `json:"kind"`
				Data map[string]string `json:"data"`
			}
			if err := yaml.Unmarshal([]byte(doc), &cm); err != nil || cm.Kind != "ConfigMap" {
				continue
			}
			if err := s.Validate(asJSONValue(t, []byte(doc))); err != nil {
				t.Errorf("%s: the schema refuses the ConfigMap: %v", f, err)
			}
			body := cm.Data[ConfigMapKey]
			if errs := parseAndValidate(body); len(errs) > 0 {
				t.Fatalf("%s: %v", f, errs)
			}
			if err := s.Validate(asJSONValue(t, []byte(body))); err != nil {
				t.Errorf("%s: the schema refuses the policy Parse accepts: %v", f, err)
			}
			n++
		}
	}
	if n < 5 {
		t.Errorf("checked only %d example policies", n)
	}

	const valid = "apiVersion: isolator.dev/v1alpha2\nkind: RuntimePolicy\nspec:\n  runtimeClasses: [{name: kata-rc, isolation: VM}]\n  rules:\n  - name: r\n    runtimeClass: kata-rc\n    match: {namespaces: [\"t-*\"]}\n"
	for _, tc := range []struct{ name, doc, where string }{
		{"a misspelt field", strings.Replace(valid, "runtimeClass: kata-rc", "runtimeclass: kata-rc", 1), "/spec/rules/0"},
		{"an unknown tier", strings.Replace(valid, "isolation: VM", "isolation: Hypervisor", 1), "/spec/runtimeClasses/0/isolation"},
		{"an unknown version", strings.Replace(valid, "v1alpha2", "v1beta1", 1), "/apiVersion"},
		{"a rule without a class", strings.Replace(valid, "    runtimeClass: kata-rc\n", "", 1), "/spec/rules/0"},
		{"a ConfigMap without the policy label", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p, labels: {}}\ndata: {policy.yaml: x}\n", "/metadata/labels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if errs := parseAndValidate(tc.doc); len(errs) == 0 && !strings.Contains(tc.name, "ConfigMap") {
				t.Fatalf("Parse and Validate accept it")
			}
			err := s.Validate(asJSONValue(t, []byte(tc.doc)))
			if err == nil {
				t.Fatal("the schema accepts it")
			}
			if !strings.Contains(fmt.Sprintf("%#v", err), tc.where) && !strings.Contains(err.Error(), tc.where) {
				t.Errorf("the refusal does not point at %s: %v", tc.where, err)
			}
		})
	}
	if err := s.Validate(asJSONValue(t, []byte(valid))); err != nil {
		t.Errorf("the schema refuses a valid policy: %v", err)
	}
}
