package ociimage

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// stage is what a Dockerfile stage declares about its image.
type stage struct {
	user       string
	entrypoint []string
	cmd        []string
	copies     map[string]string // destination -> source (with --from=<stage>)
	runs       []string
}

// dockerfileStages parses the Dockerfile with BuildKit's own parser.
func dockerfileStages(t *testing.T) map[string]*stage {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	stages := map[string]*stage{}
	var cur *stage
	for _, n := range res.AST.Children {
		var args []string
		for a := n.Next; a != nil; a = a.Next {
			args = append(args, a.Value)
		}
		switch strings.ToLower(n.Value) {
		case "from":
			cur = &stage{copies: map[string]string{}}
			if len(args) == 3 && strings.EqualFold(args[1], "as") {
				stages[args[2]] = cur
			}
		case "user":
			cur.user = args[0]
		case "entrypoint":
			if !n.Attributes["json"] {
				t.Errorf("line %d: ENTRYPOINT in shell form; isolator's images use the exec form", n.StartLine)
			}
			cur.entrypoint = args
		case "cmd":
			if !n.Attributes["json"] {
				t.Errorf("line %d: CMD in shell form", n.StartLine)
			}
			cur.cmd = args
		case "copy":
			from := ""
			for _, fl := range n.Flags {
				if v, ok := strings.CutPrefix(fl, "--from="); ok {
					from = v + ":"
				}
			}
			cur.copies[args[len(args)-1]] = from + args[0]
		case "run":
			cur.runs = append(cur.runs, strings.Join(args, " "))
		}
	}
	return stages
}

// TestDockerfileContract holds the Dockerfile and the daemonless recipe (Webhook, Node)
// to one contract: the same user, entrypoint, command and paths. A change to either
// that the other does not follow fails here.
func TestDockerfileContract(t *testing.T) {
	stages := dockerfileStages(t)
	for _, name := range []string{"build", "kata", "node", "webhook"} {
		if stages[name] == nil {
			t.Fatalf("the Dockerfile has no stage %q (stages: %v)", name, stages)
		}
	}
	web := Webhook("isolator-webhook:test", "/in/isolator-webhook", "amd64")
	node := Node("isolator-node:test", "/in/isolator", "/in/kata", "amd64")
	for _, c := range []struct {
		image  string
		stage  *stage
		recipe Spec
		binary string // what the Dockerfile copies to BinaryPath
	}{
		{"webhook", stages["webhook"], web, "build:/out/isolator-webhook"},
		{"node", stages["node"], node, "build:/out/isolator"},
	} {
		if c.stage.user != c.recipe.User {
			t.Errorf("%s image: Dockerfile USER %q, recipe %q", c.image, c.stage.user, c.recipe.User)
		}
		if !slices.Equal(c.stage.entrypoint, c.recipe.Entrypoint) || !slices.Equal(c.stage.cmd, c.recipe.Cmd) {
			t.Errorf("%s image: Dockerfile ENTRYPOINT %q CMD %q, recipe %q %q", c.image, c.stage.entrypoint, c.stage.cmd, c.recipe.Entrypoint, c.recipe.Cmd)
		}
		if src := c.stage.copies[BinaryPath]; src != c.binary {
			t.Errorf("%s image: the Dockerfile copies %q to %s, want %s", c.image, src, BinaryPath, c.binary)
		}
	}
	ns := stages["node"]
	if src := ns.copies[KataPath]; src != "kata:"+KataPath {
		t.Errorf("node image: the Dockerfile copies %q to %s, want the kata stage's %s", src, KataPath, KataPath)
	}
	if !slices.ContainsFunc(stages["kata"].runs, func(r string) bool { return strings.Contains(r, "-C "+KataPath+" ") }) {
		t.Errorf("the kata stage does not unpack the release into %s: %q", KataPath, stages["kata"].runs)
	}
	// The recipe puts the same files at the same paths.
	paths := func(s Spec) []string {
		var p []string
		for _, f := range s.Files {
			if !f.Dir {
				p = append(p, f.Path)
			}
		}
		slices.Sort(p)
		return p
	}
	if got := paths(web); !slices.Equal(got, []string{BinaryPath}) {
		t.Errorf("webhook recipe files %v", got)
	}
	if got := paths(node); !slices.Equal(got, []string{BinaryPath, KataPath}) {
		t.Errorf("node recipe files %v", got)
	}
}
