package containerd

import (
	"bytes"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/pelletier/go-toml/v2"
)

// FuzzPlanInstall feeds arbitrary main configs to the planner. Whatever the input, it
// must not panic, and when it accepts a config: the admin's bytes change by one
// insertion only, the result is still TOML, the drop-in is TOML, a second plan is a
// no-op and PlanRemoval restores the input byte for byte.
func FuzzPlanInstall(f *testing.F) {
	for _, c := range planCases {
		if c.main != "" {
			f.Add(readFixture(f, c.main), c.template)
		}
	}
	f.Add([]byte("version = 2\nimports = [ # c\n]\n"), false)
	f.Add([]byte("version = 3\nimports = ['a', 'b',]\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, template bool) {
		mainPath := etcMain
		if template {
			mainPath = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl"
		}
		fsys := fstest.MapFS{strings.TrimPrefix(mainPath, "/"): &fstest.MapFile{Data: data}}
		in := Input{Main: File{Path: mainPath, Data: data, Exists: true}, Template: template, FS: fsys, Kata: DefaultKata}
		p, err := PlanInstall(in)
		if err != nil {
			return
		}
		inserted := insertion(t, data, p.Main.Data)
		if p.MainChanged != (inserted != "") {
			t.Fatalf("MainChanged = %v but inserted %q", p.MainChanged, inserted)
		}
		if !template {
			var doc map[string]any
			if err := toml.Unmarshal(p.Main.Data, &doc); err != nil {
				t.Fatalf("planned main config is not TOML: %v\n%q", err, p.Main.Data)
			}
		}
		var drop map[string]any
		if err := toml.Unmarshal(p.DropIn.Data, &drop); err != nil {
			t.Fatalf("drop-in is not TOML: %v\n%s", err, p.DropIn.Data)
		}
		fsys[strings.TrimPrefix(p.DropIn.Path, "/")] = &fstest.MapFile{Data: p.DropIn.Data}
		again := in
		again.Main = p.Main
		p2, err := PlanInstall(again)
		if err != nil {
			t.Fatalf("second plan failed: %v", err)
		}
		if p2.MainChanged || !bytes.Equal(p2.DropIn.Data, p.DropIn.Data) {
			t.Fatalf("second plan is not a no-op")
		}
		entry := ""
		if p.ImportAdded {
			entry = p.ImportEntry
		}
		r, err := PlanRemoval(RemovalInput{Main: p.Main, Template: template, ImportEntry: entry})
		if err != nil {
			t.Fatalf("PlanRemoval: %v", err)
		}
		if !bytes.Equal(r.Data, data) {
			t.Fatalf("PlanRemoval did not restore the input:\n got %q\nwant %q", r.Data, data)
		}
	})
}
