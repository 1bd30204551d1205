package containerd

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/pelletier/go-toml/v2"
)

const etcMain = "/etc/containerd/config.toml"

type planWant struct {
	err       string // substring of the error; the rest is not checked then
	schema    int
	dropIn    string
	entry     string
	added     bool
	created   bool
	runcAdded bool
	// inserted is the only text spliced into the main config ("" when unchanged).
	inserted  string
	loadOrder []string
	// carried lists keys of the drop-in's CRI section other than containerd (schema 2).
	carried map[string]any
}

type planCase struct {
	name     string
	main     string // fixture under testdata/configs; "" means the file does not exist
	mainPath string // default /etc/containerd/config.toml
	template bool
	rendered string // fixture for k3s's rendered config.toml
	files    map[string]string
	version  string // the host's containerd version
	want     planWant
}

var planCases = []planCase{
	{
		name: "containerd-1.6-default", main: "containerd-1.6-default.toml",
		want: planWant{
			schema: 2, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, inserted: `"/etc/containerd/conf.d/isolator-kata.toml"`, runcAdded: false,
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{"sandbox_image": "registry.k8s.io/pause:3.6", "enable_selinux": false},
		},
	},
	{
		name: "containerd-2.1-v3", main: "containerd-2.1-v3.toml",
		want: planWant{
			schema: 3, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, inserted: `imports = ["/etc/containerd/conf.d/isolator-kata.toml"] ` + importMarker + "\n",
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
		},
	},
	{
		name: "containerd-2.4-default", main: "containerd-2.4-default.toml",
		files: map[string]string{"/etc/containerd/conf.d/10-mirrors.toml": "v2-extra.toml"},
		want: planWant{
			schema: 4, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/*.toml",
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/10-mirrors.toml", "/etc/containerd/conf.d/isolator-kata.toml"},
		},
	},
	{
		name: "v1-versionless", main: "v1-versionless.toml",
		want: planWant{err: `no "version" key or version 1: this is the legacy v1 schema`},
	},
	{
		name: "v1-explicit", main: "v1-explicit.toml",
		want: planWant{err: "containerd config migrate"},
	},
	{
		name: "missing-file-containerd-1.6", version: "1.6.20~ds1",
		want: planWant{
			schema: 2, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, created: true, runcAdded: true,
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{},
		},
	},
	{
		name: "missing-file-containerd-2.4", version: "2.4.2",
		want: planWant{
			schema: 4, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, created: true, runcAdded: true,
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
		},
	},
	{
		name: "missing-file-unknown-version",
		want: planWant{err: "containerd version is unknown"},
	},
	{
		name: "v2-comments-floats", main: "v2-comments-floats.toml",
		want: planWant{
			schema: 2, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, inserted: `imports = ["/etc/containerd/conf.d/isolator-kata.toml"] ` + importMarker + "\n",
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{"sandbox_image": "registry.example.com/pause:3.9", "max_container_log_line_size": int64(16384)},
		},
	},
	{
		name: "v2-confd-glob", main: "v2-confd-glob.toml",
		want: planWant{
			schema: 2, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/*.toml",
			runcAdded: true,
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{"sandbox_image": "registry.example.com/pause:3.9"},
		},
	},
	{
		name: "v2-relative-import", main: "v2-relative-import.toml",
		files: map[string]string{"/etc/containerd/cri.toml": "v2-relative-import-cri.toml"},
		want: planWant{
			schema: 2, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, inserted: `, "/etc/containerd/conf.d/isolator-kata.toml"`, runcAdded: true,
			loadOrder: []string{etcMain, "/etc/containerd/cri.toml", "/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{"sandbox_image": "registry.example.com/pause:from-import"},
		},
	},
	{
		name: "v2-imports-on-last-line", main: "v2-imports-on-last-line.toml",
		files: map[string]string{"/etc/containerd/extra.toml": "v2-extra.toml"},
		want: planWant{
			schema: 2, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, inserted: `, "/etc/containerd/conf.d/isolator-kata.toml"`, runcAdded: true,
			loadOrder: []string{etcMain, "/etc/containerd/extra.toml", "/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{},
		},
	},
	{
		name: "v2-after-conflict", main: "v2-after-conflict.toml",
		files: map[string]string{"/etc/containerd/conf.d/zz-admin.toml": "v2-zz-cri.toml"},
		want:  planWant{err: "/etc/containerd/conf.d/zz-admin.toml is read after isolator's drop-in"},
	},
	{
		name: "imports-not-array", main: "imports-not-array.toml",
		want: planWant{err: "imports: must be an array of strings"},
	},
	{
		name: "import-directory", main: "import-directory.toml",
		want: planWant{err: `is a directory that holds isolator's drop-in; containerd imports files: use a glob such as "/etc/containerd/conf.d/*.toml"`},
	},
	{
		name: "v2-kata-defined", main: "v2-kata-defined.toml",
		want: planWant{err: `already defines a "kata" runtime handler`},
	},
	{
		name: "v3-runc-defined", main: "v3-runc-systemd.toml",
		want: planWant{
			schema: 3, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, inserted: `imports = ["/etc/containerd/conf.d/isolator-kata.toml"] ` + importMarker + "\n",
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
		},
	},
	{
		name: "v4-no-trailing-newline", main: "v4-no-trailing-newline.toml",
		want: planWant{
			schema: 4, dropIn: "/etc/containerd/conf.d/isolator-kata.toml", entry: "/etc/containerd/conf.d/isolator-kata.toml",
			added: true, inserted: "\n" + `imports = ["/etc/containerd/conf.d/isolator-kata.toml"] ` + importMarker, runcAdded: true,
			loadOrder: []string{etcMain, "/etc/containerd/conf.d/isolator-kata.toml"},
		},
	},
	{
		name: "k3s-base-template-v3", main: "k3s-base.toml.tmpl", template: true, rendered: "k3s-rendered-v3.toml",
		mainPath: "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl",
		want: planWant{
			schema: 3, dropIn: "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml",
			entry: "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml", added: true,
			inserted:  `imports = ["/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml"] ` + importMarker + "\n",
			loadOrder: []string{"/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl", "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml"},
		},
	},
	{
		name: "k3s-missing-template-v2", template: true, rendered: "k3s-rendered-v2.toml",
		mainPath: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl",
		want: planWant{
			schema: 2, dropIn: "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml",
			entry: "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml", added: true, created: true,
			loadOrder: []string{"/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl", "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{"sandbox_image": "rancher/mirrored-pause:3.6", "stream_server_port": "10010"},
		},
	},
	{
		name: "k3s-base-template-v2-not-rendered", template: true,
		mainPath: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl",
		want:     planWant{err: "start k3s/rke2 once"},
	},
	{
		name: "k3s-full-template-v2", main: "k3s-full-v2.toml.tmpl", template: true,
		mainPath: "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl",
		want: planWant{
			schema: 2, dropIn: "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml",
			entry: "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml", added: true, runcAdded: true,
			inserted:  `imports = ["/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml"] ` + importMarker + "\n",
			loadOrder: []string{"/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl", "/var/lib/rancher/k3s/agent/etc/containerd/conf.d/isolator-kata.toml"},
			carried:   map[string]any{"stream_server_port": "10010"},
		},
	},
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// caseInput builds the planner input of a case: the host filesystem holds the main
// config and every extra file at its host path.
func caseInput(t testing.TB, c planCase) (Input, fstest.MapFS) {
	mainPath := c.mainPath
	if mainPath == "" {
		mainPath = etcMain
	}
	fsys := fstest.MapFS{}
	in := Input{Main: File{Path: mainPath}, Template: c.template, FS: fsys, ContainerdVersion: c.version, Kata: DefaultKata}
	if c.main != "" {
		in.Main.Data, in.Main.Exists = readFixture(t, c.main), true
		fsys[strings.TrimPrefix(mainPath, "/")] = &fstest.MapFile{Data: in.Main.Data}
	}
	if c.rendered != "" {
		in.Rendered = File{Path: filepath.Join(filepath.Dir(mainPath), "config.toml"), Data: readFixture(t, c.rendered), Exists: true}
	}
	for p, fixture := range c.files {
		fsys[strings.TrimPrefix(p, "/")] = &fstest.MapFile{Data: readFixture(t, fixture)}
	}
	return in, fsys
}

func TestPlanInstall(t *testing.T) {
	used := map[string]bool{}
	for _, c := range planCases {
		t.Run(c.name, func(t *testing.T) {
			in, fsys := caseInput(t, c)
			p, err := PlanInstall(in)
			if c.want.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.want.err) {
					t.Fatalf("error = %v, want one containing %q", err, c.want.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("PlanInstall: %v", err)
			}
			got := planWant{
				schema: p.Schema.Version, dropIn: p.DropIn.Path, entry: p.ImportEntry, added: p.ImportAdded,
				created: p.MainCreated, runcAdded: p.RuncAdded, loadOrder: p.LoadOrder,
			}
			if !c.want.created {
				got.inserted = insertion(t, in.Main.Data, p.Main.Data)
			}
			if p.MainChanged != (c.want.added || c.want.created) {
				t.Errorf("MainChanged = %v, want %v", p.MainChanged, c.want.added || c.want.created)
			}
			want := c.want
			want.carried, got.carried = nil, nil
			if !reflect.DeepEqual(got, want) {
				t.Errorf("plan\n got %+v\nwant %+v", got, want)
			}

			checkDropIn(t, p, c.want)
			used[c.name+".dropin.toml"] = true
			checkGolden(t, c.name+".dropin.toml", p.DropIn.Data)
			if p.MainCreated {
				used[c.name+".main"] = true
				checkGolden(t, c.name+".main", p.Main.Data)
			}
			if !in.Template {
				var doc map[string]any
				if err := toml.Unmarshal(p.Main.Data, &doc); err != nil {
					t.Errorf("main config after the plan is not valid TOML: %v", err)
				}
			}

			// A second plan over the result changes nothing: no write, no restart.
			fsys[strings.TrimPrefix(p.DropIn.Path, "/")] = &fstest.MapFile{Data: p.DropIn.Data}
			again := in
			again.Main = p.Main
			p2, err := PlanInstall(again)
			if err != nil {
				t.Fatalf("second PlanInstall: %v", err)
			}
			if p2.MainChanged || !bytes.Equal(p2.DropIn.Data, p.DropIn.Data) || p2.DropIn.Path != p.DropIn.Path {
				t.Errorf("second plan is not a no-op: main changed %v, drop-in equal %v", p2.MainChanged, bytes.Equal(p2.DropIn.Data, p.DropIn.Data))
			}

			// Removal gives back the admin's bytes exactly.
			entry := ""
			if p.ImportAdded {
				entry = p.ImportEntry
			}
			r, err := PlanRemoval(RemovalInput{Main: p.Main, Template: in.Template, ImportEntry: entry, Created: p.MainCreated})
			if err != nil {
				t.Fatalf("PlanRemoval: %v", err)
			}
			switch {
			case p.MainCreated && !r.Delete:
				t.Errorf("PlanRemoval kept a file isolator created:\n%s", r.Data)
			case !p.MainCreated && !bytes.Equal(r.Data, in.Main.Data):
				t.Errorf("PlanRemoval did not restore the config byte for byte:\n got %q\nwant %q", r.Data, in.Main.Data)
			case r.Changed != p.MainChanged:
				t.Errorf("PlanRemoval Changed = %v, want %v", r.Changed, p.MainChanged)
			}
			// And removing twice is a no-op.
			if !r.Delete {
				r2, err := PlanRemoval(RemovalInput{Main: File{Path: p.Main.Path, Data: r.Data, Exists: true}, Template: in.Template, ImportEntry: entry})
				if err != nil || r2.Changed || !bytes.Equal(r2.Data, r.Data) {
					t.Errorf("second PlanRemoval changed the config: %v %v", err, r2 != nil && r2.Changed)
				}
			}
		})
	}
	t.Run("no stale goldens", func(t *testing.T) {
		entries, err := os.ReadDir(filepath.Join("testdata", "golden"))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if !used[e.Name()] {
				t.Errorf("testdata/golden/%s belongs to no test case: delete it", e.Name())
			}
		}
	})
}

// insertion returns the text added to before to make after, failing the test when after
// is anything but before with one contiguous insertion.
func insertion(t *testing.T, before, after []byte) string {
	t.Helper()
	if bytes.Equal(before, after) {
		return ""
	}
	i := 0
	for i < len(before) && i < len(after) && before[i] == after[i] {
		i++
	}
	j := 0
	for j < len(before)-i && j < len(after)-i && before[len(before)-1-j] == after[len(after)-1-j] {
		j++
	}
	if i+j != len(before) {
		t.Fatalf("main config changed beyond one insertion:\nbefore %q\nafter  %q", before, after)
	}
	return string(after[i : len(after)-j])
}

// checkDropIn parses the drop-in and checks the handlers and carried settings.
func checkDropIn(t *testing.T, p *Plan, want planWant) {
	t.Helper()
	if !bytes.HasPrefix(p.DropIn.Data, []byte(dropInHeader)) {
		t.Errorf("drop-in does not start with isolator's header")
	}
	var doc map[string]any
	if err := toml.Unmarshal(p.DropIn.Data, &doc); err != nil {
		t.Fatalf("drop-in is not valid TOML: %v", err)
	}
	if doc["version"] != int64(want.schema) {
		t.Errorf("drop-in version = %v, want %d", doc["version"], want.schema)
	}
	plugin := pluginRuntimeV3
	if want.schema == 2 {
		plugin = pluginCRIv2
	}
	runtimes, ok := lookupTable(doc, "plugins", plugin, "containerd", "runtimes")
	if !ok {
		t.Fatalf("drop-in has no plugins.%q.containerd.runtimes", plugin)
	}
	kata, _ := runtimes[HandlerKata].(map[string]any)
	wantKata := map[string]any{
		"runtime_type":                    "io.containerd.kata.v2",
		"runtime_path":                    DefaultKata.RuntimePath,
		"privileged_without_host_devices": true,
		"pod_annotations":                 []any{"io.katacontainers.*"},
		"options":                         map[string]any{"ConfigPath": DefaultKata.ConfigPath},
	}
	if !reflect.DeepEqual(kata, wantKata) {
		t.Errorf("kata handler = %v, want %v", kata, wantKata)
	}
	_, hasRunc := runtimes[HandlerRunc]
	if want.runcAdded && !reflect.DeepEqual(runtimes[HandlerRunc], map[string]any{"runtime_type": "io.containerd.runc.v2"}) {
		t.Errorf("runc handler = %v, want the plain runc.v2 handler", runtimes[HandlerRunc])
	}
	if !want.runcAdded && hasRunc && want.schema != 2 {
		t.Errorf("drop-in defines runc although the admin config does")
	}
	section, _ := lookupTable(doc, "plugins", plugin)
	if want.schema != 2 {
		if len(section) != 1 {
			t.Errorf("schema %d drop-in sets more than the handlers: %v", want.schema, section)
		}
		return
	}
	for k, v := range want.carried {
		if !reflect.DeepEqual(section[k], v) {
			t.Errorf("carried CRI setting %s = %v, want %v", k, section[k], v)
		}
	}
	if len(want.carried) == 0 && len(section) != 1 {
		t.Errorf("drop-in carries CRI settings although the admin config has none: %v", slices.Sorted(maps.Keys(section)))
	}
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", "golden", name)
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (UPDATE_GOLDEN=1 refreshes it)\n got:\n%s\nwant:\n%s", p, got, want)
	}
}

func BenchmarkPlanInstall(b *testing.B) {
	in, _ := caseInput(b, planCases[0]) // containerd 1.6 default: the largest drop-in
	b.ReportAllocs()
	for b.Loop() {
		if _, err := PlanInstall(in); err != nil {
			b.Fatal(err)
		}
	}
}
