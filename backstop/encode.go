package backstop

import (
	"encoding/json"
	"fmt"
	"io"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"sigs.k8s.io/yaml"
)

// Manifest turns an object into the map a user would write: no status and no empty
// creationTimestamp. Encode writes it; the reconciler applies it.
func Manifest(o any) (map[string]any, error) {
	data, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	return m, nil
}

// Encode writes the objects for kubectl apply: a YAML stream (format "yaml") or a v1
// List (format "json"). Policies come before their bindings.
func Encode(w io.Writer, format string, vaps []*admissionregistrationv1.ValidatingAdmissionPolicy, bindings []*admissionregistrationv1.ValidatingAdmissionPolicyBinding) error {
	objs := make([]any, 0, len(vaps)+len(bindings))
	for _, v := range vaps {
		objs = append(objs, v)
	}
	for _, b := range bindings {
		objs = append(objs, b)
	}
	for i, o := range objs {
		m, err := Manifest(o)
		if err != nil {
			return fmt.Errorf("encoding backstop object %d: %w", i, err)
		}
		objs[i] = m
	}
	switch format {
	case "yaml":
		for i, o := range objs {
			data, err := yaml.Marshal(o)
			if err != nil {
				return fmt.Errorf("encoding backstop object %d: %w", i, err)
			}
			if i > 0 {
				if _, err := io.WriteString(w, "---\n"); err != nil {
					return err
				}
			}
			if _, err := w.Write(data); err != nil {
				return err
			}
		}
		return nil
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(map[string]any{"apiVersion": "v1", "kind": "List", "items": objs})
	}
	return fmt.Errorf("unknown output format %q: use yaml or json", format)
}
