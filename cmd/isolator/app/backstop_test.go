package app

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/isolator-dev/isolator/backstop"
	"github.com/isolator-dev/isolator/policy"
)

func TestPolicyBackstopCommand(t *testing.T) {
	examples := "../../../manifests/examples/"
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: isolator.dev/v1alpha1\nkind: RuntimePolicy\nspec:\n  runtimeClasses: []\n  rules: [{name: x, runtimeClass: kata-rc, match: {namespaces: [a]}}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		args       []string
		wantCode   int
		wantOut    string // "golden": equal to Generate+Encode of the policies
		wantErrHas string
	}{
		{"yaml", []string{"--policy", examples + "policies.yaml", "--policy", examples + "ci-runners.yaml"}, ExitOK, "golden", ""},
		{"json", []string{"--policy", examples + "tenant-namespaces.yaml", "-o", "json"}, ExitOK, "golden", ""},
		{"nothing to back up", []string{"--policy", examples + "audit-first.yaml"}, ExitOK, "", "nothing to back up"},
		{"no policy", nil, ExitUsage, "", "--policy is required"},
		{"bad output", []string{"--policy", examples + "policies.yaml", "-o", "xml"}, ExitUsage, "", `-o must be yaml or json, not "xml"`},
		{"invalid policy", []string{"--policy", bad}, ExitFailure, "", "runtimeClass"},
		{"missing file", []string{"--policy", "/nonexistent.yaml"}, ExitUsage, "", "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(context.Background(), append([]string{"policy", "backstop"}, tc.args...), strings.NewReader(""), &out, &errOut)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.wantCode, errOut.String())
			}
			if !strings.Contains(errOut.String(), tc.wantErrHas) {
				t.Errorf("stderr %q lacks %q", errOut.String(), tc.wantErrHas)
			}
			want := tc.wantOut
			if want == "golden" {
				want = expectedBackstop(t, tc.args)
			}
			if out.String() != want {
				t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), want)
			}
		})
	}
}

// expectedBackstop renders the backstop of the --policy files with the library.
func expectedBackstop(t *testing.T, args []string) string {
	t.Helper()
	format := "yaml"
	var sources []policy.Source
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "-o":
			format = args[i+1]
			i++
		case "--policy":
			data, err := os.ReadFile(args[i+1])
			if err != nil {
				t.Fatal(err)
			}
			srcs, errs := policy.ReadSources(args[i+1], bytes.NewReader(data))
			if len(errs) > 0 {
				t.Fatal(errs[0])
			}
			sources = append(sources, srcs...)
			i++
		}
	}
	snap, err := policy.Compile(sources...)
	if err != nil {
		t.Fatal(err)
	}
	vaps, bindings, err := backstop.Generate(snap, backstop.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := backstop.Encode(&buf, format, vaps, bindings); err != nil {
		t.Fatal(err)
	}
	if buf.Len() == 0 {
		t.Fatal("the library rendered nothing")
	}
	return buf.String()
}
