package containerd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// DropInName is the file name of isolator's drop-in.
const DropInName = "isolator-kata.toml"

// dropInHeader starts every drop-in isolator writes; files that start with it are
// isolator's own and are never read as the admin's configuration.
const dropInHeader = "# Managed by isolator (isolator node install): the runtime handlers for RuntimeClasses\n" +
	"# kata-rc and runc-rc. Do not edit: isolator rewrites this file when it drifts and\n" +
	"# 'isolator node uninstall' removes it.\n"

// createdHeader starts a main config that isolator had to create because the node had none.
const createdHeader = "# Created by isolator (isolator node install) because this node had no containerd config:\n" +
	"# containerd's built-in defaults apply, plus isolator's drop-in imported below.\n" +
	"# 'isolator node uninstall' deletes this file again.\n"

// Kata says where the Kata artifacts are, as containerd on the host sees them.
type Kata struct {
	// RuntimePath is the shim binary; naming it avoids symlinks into /usr/local/bin.
	RuntimePath string
	// ConfigPath is the Kata configuration the shim reads (options.ConfigPath).
	ConfigPath string
}

// DefaultKata is the layout of the Kata static release installed under /opt/kata.
var DefaultKata = Kata{
	RuntimePath: "/opt/kata/bin/containerd-shim-kata-v2",
	ConfigPath:  "/opt/kata/share/defaults/kata-containers/configuration.toml",
}

// File is one config file as the host sees it.
type File struct {
	Path   string // absolute path on the host, e.g. /etc/containerd/config.toml
	Data   []byte
	Exists bool
}

// Input is everything Plan needs to know about a node.
type Input struct {
	// Main is the config containerd is started with, or for k3s/rke2 the template that
	// config is rendered from. Exists is false when there is no such file.
	Main File
	// Template is true when Main is a k3s/rke2 Go template (config.toml.tmpl,
	// config-v3.toml.tmpl).
	Template bool
	// Rendered is, for templates, the config.toml k3s/rke2 rendered last time. It supplies
	// the CRI section that {{ template "base" . }} expands to.
	Rendered File
	// FS is the host's filesystem rooted at the host's "/": imports are read from it.
	FS fs.FS
	// ContainerdVersion is the host's containerd release ("1.6.20", "2.4.2"). It is only
	// needed when Main does not exist, to choose the schema of the config isolator creates.
	ContainerdVersion string
	Kata              Kata
}

// Plan is the result of planning: the exact bytes to write and what they mean.
type Plan struct {
	Schema Schema
	// DropIn is isolator's drop-in file with its full content.
	DropIn File
	// Main is the main config (or template) after the plan; MainChanged says whether its
	// bytes differ from the input, MainCreated whether isolator creates it.
	Main        File
	MainChanged bool
	MainCreated bool
	// ImportEntry is the imports entry that makes containerd load the drop-in: isolator's
	// own, or the admin's glob that already covers it. ImportAdded is true when this plan
	// splices it into Main.
	ImportEntry string
	ImportAdded bool
	// RuncAdded is true when the drop-in defines runc because no admin file does.
	RuncAdded bool
	// LoadOrder lists the files containerd reads, in order, with isolator's drop-in.
	LoadOrder []string
}

// loadedFile is one parsed file in containerd's load order.
type loadedFile struct {
	path string
	doc  map[string]any
}

// PlanInstall computes isolator's drop-in and the one-entry change to the main config.
func PlanInstall(in Input) (*Plan, error) {
	if !path.IsAbs(in.Main.Path) {
		return nil, fmt.Errorf("containerd config path %q must be absolute", in.Main.Path)
	}
	if in.Kata.RuntimePath == "" || in.Kata.ConfigPath == "" {
		return nil, errors.New("kata runtime path and config path must be set")
	}
	p := &Plan{Main: File{Path: in.Main.Path, Data: in.Main.Data, Exists: true}}
	mainDir := path.Dir(in.Main.Path)
	defaultDrop := path.Join(mainDir, "conf.d", DropInName)

	data := in.Main.Data
	if !in.Main.Exists {
		skeleton, err := createdSkeleton(in)
		if err != nil {
			return nil, err
		}
		data = skeleton
		p.MainCreated = true
		p.MainChanged = true
	}

	stripped := data
	if in.Template {
		var err error
		if stripped, err = stripActions(data); err != nil {
			return nil, fmt.Errorf("%s: %w", in.Main.Path, err)
		}
	}
	keys, err := scanRootKeys(stripped)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Main.Path, err)
	}
	var mainDoc map[string]any
	if err := toml.Unmarshal(stripped, &mainDoc); err != nil {
		return nil, fmt.Errorf("%s: not valid TOML%s: %w", in.Main.Path, templateHint(in.Template), err)
	}

	if _, err := stringList(mainDoc["imports"]); err != nil {
		return nil, fmt.Errorf("%s: imports: %w", in.Main.Path, err)
	}
	schema, err := mainSchema(in, data, mainDoc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", in.Main.Path, err)
	}
	p.Schema = schema

	// Which file does containerd read the plugin sections from? For a template that
	// extends k3s's base, the rendered config holds what the base expands to.
	pluginDoc := mainDoc
	if in.Template && usesBaseTemplate(data) {
		if in.Rendered.Exists {
			if err := toml.Unmarshal(in.Rendered.Data, &pluginDoc); err != nil {
				return nil, fmt.Errorf("%s: not valid TOML: %w", in.Rendered.Path, err)
			}
		} else if schema.SectionMerge {
			return nil, fmt.Errorf("%s: extends k3s's base template, but %s, which holds the CRI settings isolator must carry over, does not exist yet: start k3s/rke2 once, then rerun",
				in.Main.Path, in.Rendered.Path)
		}
	}

	// Where does the drop-in go, and is it already imported?
	p.DropIn.Path = defaultDrop
	imports := make([]string, 0, len(keys.elements)+1)
	covered := false
	for _, e := range keys.elements {
		imports = append(imports, e.value)
		if covered {
			continue
		}
		abs := resolveImport(mainDir, e.value)
		if abs == defaultDrop {
			covered, p.ImportEntry = true, e.value
			continue
		}
		dir := path.Dir(abs)
		candidate := path.Join(dir, DropInName)
		if hasMeta(abs) && !hasMeta(dir) {
			if ok, _ := path.Match(abs, candidate); ok {
				covered, p.ImportEntry, p.DropIn.Path = true, e.value, candidate
			}
		}
	}
	if !covered {
		newData, err := insertImport(data, stripped, keys, defaultDrop, in.Template)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.Main.Path, err)
		}
		data = newData
		imports = append(imports, defaultDrop)
		p.ImportEntry, p.ImportAdded, p.MainChanged = defaultDrop, true, true
	}
	p.Main.Data = data

	before, after, order, err := loadOrder(in.FS, in.Main.Path, pluginDoc, imports, p.DropIn.Path)
	if err != nil {
		return nil, err
	}
	p.LoadOrder = order

	dropDoc, runcAdded, err := renderHandlers(schema, in.Kata, before, after)
	if err != nil {
		return nil, err
	}
	p.RuncAdded = runcAdded
	body, err := toml.Marshal(dropDoc)
	if err != nil {
		return nil, fmt.Errorf("render drop-in: %w", err)
	}
	p.DropIn.Data = append([]byte(dropInHeader), body...)
	p.DropIn.Exists = true
	return p, nil
}

// mainSchema finds the schema version of the main config.
func mainSchema(in Input, data []byte, doc map[string]any) (Schema, error) {
	if v, ok := doc["version"]; ok {
		n, ok := v.(int64)
		if !ok {
			return Schema{}, fmt.Errorf("version: must be an integer, got %v", v)
		}
		return SchemaFor(n)
	}
	if in.Template && usesBaseTemplate(data) {
		v, err := templateVersion(in)
		if err != nil {
			return Schema{}, err
		}
		return SchemaFor(int64(v))
	}
	return Schema{}, errLegacySchema
}

// templateVersion is the schema version k3s's base template renders: the one in the
// last rendered config, or else the one the template's file name implies.
func templateVersion(in Input) (int, error) {
	if in.Rendered.Exists {
		var doc struct {
			Version int64 `toml:"version"`
		}
		if err := toml.Unmarshal(in.Rendered.Data, &doc); err != nil {
			return 0, fmt.Errorf("%s: not valid TOML: %w", in.Rendered.Path, err)
		}
		if doc.Version != 0 {
			return int(doc.Version), nil
		}
	}
	if strings.Contains(path.Base(in.Main.Path), "-v3") {
		return 3, nil
	}
	return 2, nil
}

// createdSkeleton is the main config isolator creates on a node that has none, before the
// imports entry is added. PlanRemoval deletes a created file only when it is back to this.
func createdSkeleton(in Input) ([]byte, error) {
	if in.Template {
		return []byte(createdHeader + "{{ template \"base\" . }}\n"), nil
	}
	if in.ContainerdVersion == "" {
		return nil, fmt.Errorf("%s does not exist and the host's containerd version is unknown, so isolator cannot choose the config schema: "+
			"create the file (e.g. \"containerd config default > %s\") or make the containerd binary visible to isolator, then rerun",
			in.Main.Path, in.Main.Path)
	}
	v, err := VersionForContainerd(in.ContainerdVersion)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "%sversion = %d\n", createdHeader, v), nil
}

func templateHint(template bool) string {
	if template {
		return " once its {{ }} actions are set aside (isolator reads the TOML around them)"
	}
	return ""
}

// resolveImport makes an imports entry absolute the way containerd does: relative to the
// directory of the file that imports it.
func resolveImport(dir, entry string) string {
	if path.IsAbs(entry) {
		return path.Clean(entry)
	}
	return path.Join(dir, entry)
}

func hasMeta(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// loadOrder follows imports breadth first, as containerd does, and splits the parsed files
// into those read before isolator's drop-in and those read after it.
func loadOrder(fsys fs.FS, mainPath string, mainDoc map[string]any, imports []string, dropIn string) (before, after []loadedFile, order []string, err error) {
	before = []loadedFile{{path: mainPath, doc: mainDoc}}
	order = []string{mainPath}
	seen := map[string]bool{mainPath: true}
	pending, err := expandImports(fsys, path.Dir(mainPath), imports, dropIn)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", mainPath, err)
	}
	ours := false
	for len(pending) > 0 {
		p := pending[0]
		pending = pending[1:]
		if seen[p] {
			continue
		}
		seen[p] = true
		if p == dropIn {
			ours = true
			order = append(order, p)
			continue
		}
		data, err := fs.ReadFile(fsys, strings.TrimPrefix(p, "/"))
		if errors.Is(err, fs.ErrNotExist) || isDir(fsys, p) {
			continue // containerd's own validation reports a missing import
		}
		if err != nil {
			return nil, nil, nil, fmt.Errorf("read import %s: %w", p, err)
		}
		if bytes.HasPrefix(data, []byte(dropInHeader[:30])) {
			continue // another isolator drop-in (an older location): never the admin's config
		}
		var doc map[string]any
		if err := toml.Unmarshal(data, &doc); err != nil {
			return nil, nil, nil, fmt.Errorf("%s (imported): not valid TOML: %w", p, err)
		}
		order = append(order, p)
		if ours {
			after = append(after, loadedFile{path: p, doc: doc})
		} else {
			before = append(before, loadedFile{path: p, doc: doc})
		}
		more, err := stringList(doc["imports"])
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: imports: %w", p, err)
		}
		expanded, err := expandImports(fsys, path.Dir(p), more, dropIn)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", p, err)
		}
		pending = append(pending, expanded...)
	}
	return before, after, order, nil
}

// expandImports resolves entries relative to dir and expands globs against fsys, counting
// isolator's drop-in as present even before it is written.
func expandImports(fsys fs.FS, dir string, entries []string, dropIn string) ([]string, error) {
	var out []string
	for _, e := range entries {
		abs := resolveImport(dir, e)
		if !hasMeta(abs) {
			if strings.HasPrefix(dropIn, abs+"/") {
				return nil, fmt.Errorf("imports: %q is a directory that holds isolator's drop-in; containerd imports files: use a glob such as %q", e, abs+"/*.toml")
			}
			out = append(out, abs)
			continue
		}
		matches, err := fs.Glob(fsys, strings.TrimPrefix(abs, "/"))
		if err != nil {
			return nil, fmt.Errorf("imports: bad glob %q: %w", e, err)
		}
		paths := make([]string, 0, len(matches)+1)
		hasDrop := false
		for _, m := range matches {
			paths = append(paths, "/"+m)
			hasDrop = hasDrop || "/"+m == dropIn
		}
		if ok, _ := path.Match(abs, dropIn); ok && !hasDrop {
			paths = append(paths, dropIn)
			slices.Sort(paths)
		}
		out = append(out, paths...)
	}
	return out, nil
}

func stringList(v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("must be an array of strings, got %T", v)
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			return nil, fmt.Errorf("must be an array of strings, found %T", x)
		}
		out = append(out, s)
	}
	return out, nil
}

// renderHandlers builds the drop-in document for the schema.
func renderHandlers(schema Schema, kata Kata, before, after []loadedFile) (doc map[string]any, runcAdded bool, err error) {
	kataStanza := map[string]any{
		"runtime_type":                    "io.containerd.kata.v2",
		"runtime_path":                    kata.RuntimePath,
		"privileged_without_host_devices": true,
		"pod_annotations":                 []string{"io.katacontainers.*"},
		"options":                         map[string]any{"ConfigPath": kata.ConfigPath},
	}
	runcStanza := map[string]any{"runtime_type": "io.containerd.runc.v2"}

	var section map[string]any
	if schema.SectionMerge {
		// containerd 1.x: the drop-in's CRI section replaces the admin's, so it starts as a
		// copy of the section containerd would otherwise use.
		for _, f := range after {
			if _, ok := pluginSection(f.doc, schema.RuntimePlugin); ok {
				return nil, false, fmt.Errorf("%s is read after isolator's drop-in and sets [plugins.%q]: containerd 1.x replaces whole plugin sections on import, so it would drop the kata handler; move it before the drop-in in imports",
					f.path, schema.RuntimePlugin)
			}
		}
		section = map[string]any{}
		for _, f := range before {
			if s, ok := pluginSection(f.doc, schema.RuntimePlugin); ok {
				section = deepCopy(s)
			}
		}
		runtimes := ensureTable(ensureTable(section, "containerd"), "runtimes")
		if _, ok := runtimes[HandlerKata]; ok {
			return nil, false, fmt.Errorf("%s already defines a %q runtime handler: isolator manages that handler; remove it from the admin config, then rerun",
				definer(before, schema.RuntimePlugin, HandlerKata), HandlerKata)
		}
		runtimes[HandlerKata] = kataStanza
		if _, ok := runtimes[HandlerRunc]; !ok {
			runtimes[HandlerRunc] = runcStanza
			runcAdded = true
		}
	} else {
		all := append(append([]loadedFile{}, before...), after...)
		if f := definer(all, schema.RuntimePlugin, HandlerKata); f != "" {
			return nil, false, fmt.Errorf("%s already defines a %q runtime handler: isolator manages that handler; remove it from the admin config, then rerun", f, HandlerKata)
		}
		runtimes := map[string]any{HandlerKata: kataStanza}
		if definer(all, schema.RuntimePlugin, HandlerRunc) == "" {
			runtimes[HandlerRunc] = runcStanza
			runcAdded = true
		}
		section = map[string]any{"containerd": map[string]any{"runtimes": runtimes}}
	}
	doc = map[string]any{
		"version": int64(schema.Version),
		"plugins": map[string]any{schema.RuntimePlugin: section},
	}
	return doc, runcAdded, nil
}

// definer names the last file that defines handler in plugin, or "".
func definer(files []loadedFile, plugin, handler string) string {
	name := ""
	for _, f := range files {
		s, ok := pluginSection(f.doc, plugin)
		if !ok {
			continue
		}
		if rt, ok := lookupTable(s, "containerd", "runtimes"); ok {
			if _, ok := rt[handler]; ok {
				name = f.path
			}
		}
	}
	return name
}

func pluginSection(doc map[string]any, plugin string) (map[string]any, bool) {
	return lookupTable(doc, "plugins", plugin)
}

func lookupTable(m map[string]any, keys ...string) (map[string]any, bool) {
	for _, k := range keys {
		next, ok := m[k].(map[string]any)
		if !ok {
			return nil, false
		}
		m = next
	}
	return m, true
}

func ensureTable(m map[string]any, key string) map[string]any {
	if t, ok := m[key].(map[string]any); ok {
		return t
	}
	t := map[string]any{}
	m[key] = t
	return t
}

func deepCopy(m map[string]any) map[string]any {
	out := maps.Clone(m)
	for k, v := range out {
		out[k] = deepCopyValue(v)
	}
	return out
}

func deepCopyValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		return deepCopy(x)
	case []any:
		c := make([]any, len(x))
		for i := range x {
			c[i] = deepCopyValue(x[i])
		}
		return c
	default:
		return v
	}
}

// isDir reports whether p is a directory: containerd fails on such an import, and its own
// validation says so; the planner skips it like a missing file.
func isDir(fsys fs.FS, p string) bool {
	st, err := fs.Stat(fsys, strings.TrimPrefix(p, "/"))
	return err == nil && st.IsDir()
}

// CandidateMain returns the planned main config changed to load the drop-in from
// candidate instead of the drop-in's real path, so that the host's containerd can
// validate the result ("containerd --config X config dump") before anything live changes.
// The candidate config must sit in the main config's directory, so that relative imports
// resolve the same way.
func (p *Plan) CandidateMain(candidate string, template bool) ([]byte, error) {
	stripped := p.Main.Data
	if template {
		var err error
		if stripped, err = stripActions(p.Main.Data); err != nil {
			return nil, err
		}
	}
	keys, err := scanRootKeys(stripped)
	if err != nil {
		return nil, err
	}
	for _, e := range keys.elements {
		if resolveImport(path.Dir(p.Main.Path), e.value) != p.DropIn.Path {
			continue
		}
		q, err := quoteEntry(candidate)
		if err != nil {
			return nil, err
		}
		out := append([]byte{}, p.Main.Data[:e.start]...)
		out = append(out, q...)
		return append(out, p.Main.Data[e.end:]...), nil
	}
	// An admin glob loads the drop-in: load the candidate as well, after it.
	return insertImport(p.Main.Data, stripped, keys, candidate, template)
}

// WithImport returns config bytes (a rendered k3s/rke2 config) that also import extra.
func WithImport(data []byte, extra string) ([]byte, error) {
	keys, err := scanRootKeys(data)
	if err != nil {
		return nil, err
	}
	return insertImport(data, data, keys, extra, false)
}

// IsDropIn reports whether data is a drop-in isolator wrote.
func IsDropIn(data []byte) bool { return bytes.HasPrefix(data, []byte(dropInHeader[:30])) }
