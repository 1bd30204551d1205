package containerd

import (
	"bytes"
	"fmt"
)

// RemovalInput describes what isolator added to a main config.
type RemovalInput struct {
	Main     File
	Template bool
	// ImportEntry is the imports entry isolator added; "" when it added none (an admin
	// glob already covered the drop-in).
	ImportEntry string
	// Created is true when isolator created Main because the node had none.
	Created bool
}

// Removal is the main config after isolator's entry is taken out.
type Removal struct {
	Data    []byte
	Changed bool
	// Delete is true when isolator created the file and nothing but its own lines is left.
	Delete bool
}

// PlanRemoval undoes PlanInstall's change to the main config byte for byte. It is idempotent:
// a config without isolator's entry comes back unchanged.
func PlanRemoval(in RemovalInput) (*Removal, error) {
	r := &Removal{Data: in.Main.Data}
	if !in.Main.Exists {
		return r, nil
	}
	stripped := in.Main.Data
	if in.Template {
		var err error
		if stripped, err = stripActions(in.Main.Data); err != nil {
			return nil, fmt.Errorf("%s: %w", in.Main.Path, err)
		}
	}
	if in.ImportEntry != "" {
		keys, err := scanRootKeys(stripped)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.Main.Path, err)
		}
		out, found := removeImport(in.Main.Data, stripped, keys, in.ImportEntry)
		r.Data, r.Changed = out, found
	}
	if in.Created && isCreatedSkeleton(r.Data, in.Template) {
		r.Delete, r.Changed = true, true
	}
	return r, nil
}

// isCreatedSkeleton reports whether data is exactly a config isolator created, minus its
// imports entry.
func isCreatedSkeleton(data []byte, template bool) bool {
	if template {
		return bytes.Equal(data, []byte(createdHeader+"{{ template \"base\" . }}\n"))
	}
	for v := minVersion; v <= maxVersion; v++ {
		if bytes.Equal(data, fmt.Appendf(nil, "%sversion = %d\n", createdHeader, v)) {
			return true
		}
	}
	return false
}
