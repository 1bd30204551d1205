package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// importMarker ends the line that isolator adds when a config has no imports key, so that
// an admin reading the file knows where it came from and PlanRemoval knows the whole line
// is isolator's.
const importMarker = "# added by isolator; 'isolator node uninstall' removes it"

// rootKeys locates the root-table keys isolator cares about in a config's bytes.
type rootKeys struct {
	version *span // the `version = N` key-value
	imports *span // the `imports = [...]` key-value
	// elements are the imports array's string elements, in order.
	elements []element
	// closing is the offset of the imports array's closing bracket.
	closing int
}

type span struct{ start, end int }

type element struct {
	span
	value string
}

// scanRootKeys parses data (already stripped of template actions) with go-toml's
// parser and returns where `version` and `imports` sit in the root table.
func scanRootKeys(data []byte) (rootKeys, error) {
	var keys rootKeys
	var p unstable.Parser
	p.Reset(data)
	for p.NextExpression() {
		expr := p.Expression()
		if expr.Kind == unstable.Table || expr.Kind == unstable.ArrayTable {
			break // keys after the first table header belong to that table
		}
		if expr.Kind != unstable.KeyValue {
			continue
		}
		it := expr.Key()
		if !it.Next() {
			continue
		}
		name := string(it.Node().Data)
		if it.Next() {
			continue // a dotted key such as plugins.x = ... is not a root scalar
		}
		kv := span{int(expr.Raw.Offset), int(expr.Raw.Offset + expr.Raw.Length)}
		switch name {
		case "version":
			keys.version = &kv
		case "imports":
			val := expr.Value()
			if val.Kind != unstable.Array {
				return keys, fmt.Errorf("imports: must be an array of strings, got a %s", val.Kind)
			}
			keys.imports = &kv
			for elems := val.Children(); elems.Next(); {
				e := elems.Node()
				if e.Kind == unstable.Comment {
					continue
				}
				if e.Kind != unstable.String {
					return keys, fmt.Errorf("imports: must be an array of strings, found a %s", e.Kind)
				}
				keys.elements = append(keys.elements, element{
					span:  span{int(e.Raw.Offset), int(e.Raw.Offset + e.Raw.Length)},
					value: string(e.Data),
				})
			}
			// The key-value ends right after the array's closing bracket.
			keys.closing = kv.end - 1
			if keys.closing < 0 || data[keys.closing] != ']' {
				return keys, errors.New("imports: cannot find the end of the array")
			}
		}
	}
	if err := p.Error(); err != nil {
		return keys, err
	}
	return keys, nil
}

// quoteEntry renders a path as a TOML basic string. Paths that would need escapes are
// refused: isolator only adds paths it chose itself.
func quoteEntry(path string) (string, error) {
	if strings.ContainsAny(path, "\"\\\n\r\t") {
		return "", fmt.Errorf("path %q cannot be written into imports without escapes", path)
	}
	return `"` + path + `"`, nil
}

// insertImport returns data with entry added to the root imports array, or with a new
// imports line when there is none. It changes nothing else.
func insertImport(data, stripped []byte, keys rootKeys, entry string, atTop bool) ([]byte, error) {
	q, err := quoteEntry(entry)
	if err != nil {
		return nil, err
	}
	var at int
	var text string
	switch {
	case keys.imports != nil && len(keys.elements) > 0:
		at = keys.elements[len(keys.elements)-1].end
		text = ", " + q
	case keys.imports != nil:
		at = keys.closing
		text = q
	case keys.version != nil && !atTop:
		// A new root key must come before the first table: right after `version` keeps it
		// there and next to the other top-level settings.
		eol := bytes.IndexByte(stripped[keys.version.end:], '\n')
		if eol < 0 {
			at = len(data)
			text = "\nimports = [" + q + "] " + importMarker
		} else {
			at = keys.version.end + eol + 1
			text = "imports = [" + q + "] " + importMarker + "\n"
		}
	default:
		at = 0
		text = "imports = [" + q + "] " + importMarker + "\n"
	}
	out := make([]byte, 0, len(data)+len(text))
	out = append(out, data[:at]...)
	out = append(out, text...)
	out = append(out, data[at:]...)
	return out, nil
}

// removeImport takes entry out of the root imports array, undoing insertImport byte for
// byte. found is false when entry is not there (already removed: uninstall is idempotent).
func removeImport(data, stripped []byte, keys rootKeys, entry string) (out []byte, found bool) {
	idx := -1
	for i, e := range keys.elements {
		if e.value == entry {
			idx = i
		}
	}
	if idx < 0 {
		return data, false
	}
	e := keys.elements[idx]
	var from, to int
	switch {
	case len(keys.elements) == 1 && isMarkedLine(stripped, *keys.imports):
		// isolator added the whole line: remove it with its newline.
		from, to = lineBounds(stripped, *keys.imports)
	case len(keys.elements) == 1:
		from, to = e.start, e.end
	case idx > 0:
		// isolator appended ", entry" after the previous element.
		from, to = keys.elements[idx-1].end, e.end
	default:
		// Someone moved isolator's entry to the front: take it and its separator.
		from, to = e.start, keys.elements[1].start
	}
	out = make([]byte, 0, len(data)-(to-from))
	out = append(out, data[:from]...)
	out = append(out, data[to:]...)
	return out, true
}

// isMarkedLine reports whether the imports key-value is alone on a line ending with
// isolator's marker comment.
func isMarkedLine(data []byte, kv span) bool {
	from, to := lineBounds(data, kv)
	line := strings.Trim(string(data[from:to]), "\r\n")
	return strings.HasSuffix(line, importMarker) && strings.HasPrefix(line, "imports")
}

// lineBounds returns the bytes of the line holding kv including one newline: the one
// after it, or before it when kv is on the last line without a newline.
func lineBounds(data []byte, kv span) (from, to int) {
	from = bytes.LastIndexByte(data[:kv.start], '\n') + 1
	if eol := bytes.IndexByte(data[kv.end:], '\n'); eol >= 0 {
		return from, kv.end + eol + 1
	}
	if from > 0 {
		from-- // take the newline before the last line instead
	}
	return from, len(data)
}
