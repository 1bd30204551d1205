package docs

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// rbacRows returns the RBAC rules a kustomization grants isolator's service accounts,
// one table row each: | account | scope | API groups | resources | names | verbs |.
func rbacRows(t *testing.T, dir string) map[string]bool {
	t.Helper()
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	roles := map[string][]rbacv1.PolicyRule{} // "Role ns/name" or "ClusterRole name"
	type binding struct {
		ref, scope string
		subjects   []rbacv1.Subject
	}
	var bindings []binding
	for _, r := range rm.Resources() {
		data, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		switch r.GetKind() {
		case "Role", "ClusterRole":
			var role rbacv1.ClusterRole // the same rules for both kinds
			if err := yaml.Unmarshal(data, &role); err != nil {
				t.Fatal(err)
			}
			roles[r.GetKind()+" "+r.GetNamespace()+"/"+r.GetName()] = role.Rules
		case "RoleBinding", "ClusterRoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.Unmarshal(data, &b); err != nil {
				t.Fatal(err)
			}
			ns, scope := b.Namespace, "namespace"
			if r.GetKind() == "ClusterRoleBinding" {
				ns, scope = "", "cluster"
			}
			if b.RoleRef.Kind == "ClusterRole" {
				ns = ""
			}
			bindings = append(bindings, binding{ref: b.RoleRef.Kind + " " + ns + "/" + b.RoleRef.Name, scope: scope, subjects: b.Subjects})
		}
	}
	code := func(items []string) string {
		items = slices.Clone(items)
		for i, s := range items {
			if s == "" {
				s = `""`
			}
			items[i] = "`" + s + "`"
		}
		if len(items) == 0 {
			return "any"
		}
		return strings.Join(items, ", ")
	}
	rows := map[string]bool{}
	for _, b := range bindings {
		rules, ok := roles[b.ref]
		if !ok {
			t.Errorf("%s: a binding refers to %s, which the build does not have", dir, b.ref)
		}
		for _, s := range b.subjects {
			if s.Kind != rbacv1.ServiceAccountKind {
				continue
			}
			for _, rule := range rules {
				rows[fmt.Sprintf("| %s | %s | %s | %s | %s | %s |", s.Name, b.scope,
					code(rule.APIGroups), code(rule.Resources), code(rule.ResourceNames), code(rule.Verbs))] = true
			}
		}
	}
	return rows
}

// TestRBACTable: the RBAC tables of docs/security.md list exactly the rules that the
// manifests grant isolator's service accounts, with the installation each comes with.
func TestRBACTable(t *testing.T) {
	want := map[string]bool{}
	certManager := rbacRows(t, "../manifests/overlays/cert-manager")
	selfSigned := rbacRows(t, "../manifests/overlays/self-signed")
	for row := range certManager {
		install := "every"
		if !selfSigned[row] {
			install = "cert-manager"
		}
		want[row+" "+install+" |"] = true
	}
	for row := range selfSigned {
		if !certManager[row] {
			want[row+" self-signed |"] = true
		}
	}
	data, err := os.ReadFile("security.md")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 8 || !strings.HasPrefix(line, "| isolator-") {
			continue
		}
		// The last column says why; it is not compared.
		got["|"+strings.Join(cells[:7], "|")+"|"] = true
	}
	var missing, extra []string
	for row := range want {
		if !got[row] {
			missing = append(missing, row)
		}
	}
	for row := range got {
		if !want[row] {
			extra = append(extra, row)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	if len(missing) > 0 {
		t.Errorf("docs/security.md lacks these RBAC rules of the manifests (add a row with its reason):\n%s", strings.Join(missing, "\n"))
	}
	if len(extra) > 0 {
		t.Errorf("docs/security.md lists RBAC rules the manifests don't grant:\n%s", strings.Join(extra, "\n"))
	}
	if len(want) < 10 {
		t.Errorf("found only %d RBAC rules in the manifests", len(want))
	}
}
