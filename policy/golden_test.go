package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update rewrites golden files instead of comparing with them: UPDATE_GOLDEN=1 go test.
var update = os.Getenv("UPDATE_GOLDEN") != ""

// checkGolden compares got with the golden file, or rewrites it under UPDATE_GOLDEN=1.
func checkGolden(t *testing.T, golden string, got []byte) {
	t.Helper()
	if update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (create it with UPDATE_GOLDEN=1)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (refresh with UPDATE_GOLDEN=1 if the change is intended)\n--- got\n%s--- want\n%s", golden, got, want)
	}
}

// checkGoldenPairs fails for every input without a golden file and every golden file
// without an input, so that a renamed or deleted case can't leave a stale golden behind.
func checkGoldenPairs(t *testing.T, dir, inExt string) []string {
	t.Helper()
	inputs, err := filepath.Glob(filepath.Join(dir, "*"+inExt))
	if err != nil {
		t.Fatal(err)
	}
	goldens, err := filepath.Glob(filepath.Join(dir, "*.golden"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatalf("no %s inputs in %s", inExt, dir)
	}
	if update {
		for _, g := range goldens {
			if _, err := os.Stat(strings.TrimSuffix(g, ".golden") + inExt); os.IsNotExist(err) {
				if err := os.Remove(g); err != nil {
					t.Fatal(err)
				}
			}
		}
		return inputs
	}
	for _, in := range inputs {
		if _, err := os.Stat(strings.TrimSuffix(in, inExt) + ".golden"); err != nil {
			t.Errorf("%s has no golden file (create it with UPDATE_GOLDEN=1)", in)
		}
	}
	for _, g := range goldens {
		if _, err := os.Stat(strings.TrimSuffix(g, ".golden") + inExt); err != nil {
			t.Errorf("%s is stale: %s%s does not exist (UPDATE_GOLDEN=1 removes it)", g, strings.TrimSuffix(filepath.Base(g), ".golden"), inExt)
		}
	}
	return inputs
}

// validateReport reads, validates and merges the policies in one file, the way
// `isolator policy validate` does, and renders every finding.
func validateReport(name string, data []byte) string {
	var b strings.Builder
	srcs, docErrs := ReadSources(name, bytes.NewReader(data))
	bad := len(docErrs) > 0
	for _, de := range docErrs {
		fmt.Fprintln(&b, de.Error())
	}
	var valid []Source
	for _, s := range srcs {
		if errs := Validate(s.Policy, s.Root); len(errs) > 0 {
			fmt.Fprintln(&b, (&DocumentError{Origin: s.Origin, Errs: errs}).Error())
			bad = true
			continue
		}
		valid = append(valid, s)
	}
	switch {
	case bad:
	case len(valid) == 0:
		fmt.Fprintln(&b, "no policy found")
	default:
		snap, err := Compile(valid...)
		if err != nil {
			fmt.Fprintln(&b, err)
			break
		}
		for _, w := range snap.Warnings() {
			fmt.Fprintln(&b, "warning:", w)
		}
		for _, s := range valid {
			fmt.Fprintf(&b, "%s: valid (%s)\n", s.Origin, plural(len(s.Policy.Spec.Rules), "rule"))
		}
	}
	return b.String()
}

func TestValidateGolden(t *testing.T) {
	for _, in := range checkGoldenPairs(t, filepath.Join("testdata", "validate"), ".yaml") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, strings.TrimSuffix(in, ".yaml")+".golden", []byte(validateReport(filepath.Base(in), data)))
		})
	}
}

// TestFiveMistakes pins the acceptance case: five distinct mistakes, five errors, each
// with its own field path.
func TestFiveMistakes(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "validate", "five-mistakes.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, perrs := Parse(data, nil)
	if len(perrs) > 0 {
		t.Fatal(perrs)
	}
	errs := Validate(p, nil)
	wantPaths := []string{
		"spec.rules[0].name",
		"spec.rules[1].runtimeClass",
		"spec.rules[2].mode",
		"spec.rules[2].match.anyImage[0]",
		"spec.rules[3].match",
	}
	if len(errs) != len(wantPaths) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(wantPaths), errs.ToAggregate())
	}
	for i, e := range errs {
		if e.Field != wantPaths[i] {
			t.Errorf("error %d is at %s, want %s: %v", i, e.Field, wantPaths[i], e)
		}
	}
}

func TestValidateTooManyRules(t *testing.T) {
	p := &RuntimePolicy{APIVersion: APIVersion, Kind: Kind, Spec: PolicySpec{RuntimeClasses: []RuntimeClass{{Name: "runc-rc"}}}}
	for i := range MaxRules + 1 {
		p.Spec.Rules = append(p.Spec.Rules, Rule{Name: fmt.Sprintf("r%d", i), RuntimeClass: "runc-rc", Match: Match{Namespaces: []string{"x"}}})
	}
	errs := Validate(p, nil)
	if len(errs) != 1 || errs[0].Field != "spec.rules" || !strings.Contains(errs[0].Error(), "20000") {
		t.Errorf("Validate = %v, want one Too many error at spec.rules", errs.ToAggregate())
	}
	if errs := Validate(nil, nil); len(errs) != 1 || errs[0].Field != documentPath {
		t.Errorf("Validate(nil) = %v", errs)
	}
}

func TestParseLimits(t *testing.T) {
	big := append([]byte("apiVersion: isolator.dev/v1alpha1\n#"), bytes.Repeat([]byte("x"), MaxDocumentBytes)...)
	if _, errs := Parse(big, nil); len(errs) != 1 || !strings.Contains(errs[0].Error(), "Too long") {
		t.Errorf("Parse(too big) = %v", errs)
	}
	if _, errs := Parse([]byte("  \n"), nil); len(errs) != 1 || !strings.Contains(errs[0].Error(), "Required") {
		t.Errorf("Parse(blank) = %v", errs)
	}
	// The cap itself, with a small limit: reading a real 64 MiB stream is slow.
	for _, tc := range []struct {
		in      string
		wantErr bool
	}{{"0123456789", false}, {"0123456789a", true}, {"", false}} {
		got, err := io.ReadAll(&cappedReader{r: strings.NewReader(tc.in), n: 10})
		if (err != nil) != tc.wantErr || (!tc.wantErr && string(got) != tc.in) {
			t.Errorf("cappedReader(%q) = %q, %v", tc.in, got, err)
		}
		if tc.wantErr && !errors.Is(err, errStreamTooLong) {
			t.Errorf("cappedReader(%q) error = %v, want %v", tc.in, err, errStreamTooLong)
		}
	}
}

// plural renders a count of things: "1 rule", "2 rules".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
