package containerd

import (
	"bytes"
	"errors"
)

// stripActions blanks out Go template actions ({{ ... }}) in a k3s/rke2 config template,
// keeping every other byte and every newline where it was. The result parses as TOML
// when the template's TOML part is well formed, and its byte offsets are the
// template's, so edits found on it apply to the template itself.
func stripActions(tmpl []byte) ([]byte, error) {
	out := bytes.Clone(tmpl)
	for i := 0; i < len(out); {
		start := bytes.Index(out[i:], []byte("{{"))
		if start < 0 {
			break
		}
		start += i
		end := bytes.Index(out[start+2:], []byte("}}"))
		if end < 0 {
			return nil, errors.New("template action \"{{\" is never closed")
		}
		end += start + 2 + 2
		for j := start; j < end; j++ {
			if out[j] != '\n' {
				out[j] = ' '
			}
		}
		i = end
	}
	return out, nil
}

// usesBaseTemplate reports whether a k3s/rke2 template extends the built-in config with
// {{ template "base" . }}, in which case k3s supplies version, runc and the CRI section.
func usesBaseTemplate(tmpl []byte) bool {
	return bytes.Contains(tmpl, []byte(`template "base"`))
}
