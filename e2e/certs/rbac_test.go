//go:build e2e

package certs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/isolator-dev/isolator/certs"
	"github.com/isolator-dev/isolator/e2e/harness"
)

// selfClusterRules and selfNamespaceRules are what docs/certificates.md says
// self-managed mode needs on top of the webhook's base rights (manifests/base/rbac.yaml).
var (
	selfClusterRules = []rbacv1.PolicyRule{
		{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations", "validatingwebhookconfigurations"},
			ResourceNames: []string{certs.WebhookConfigurationName}, Verbs: []string{"get", "list", "watch", "patch"}},
	}
	selfNamespaceRules = []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{certs.SecretName}, Verbs: []string{"get", "list", "watch", "update"}},
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}},
		{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"get", "list", "watch", "create", "update", "delete"}},
	}
)

// baseRules reads the rules of the webhook's ClusterRole and Role from manifests/base.
func baseRules(t *testing.T) (cluster, namespaced []rbacv1.PolicyRule) {
	t.Helper()
	dir, err := harness.ManifestsDir()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "base", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		var obj struct {
			Kind     string
			Metadata struct{ Name string }
			Rules    []rbacv1.PolicyRule
		}
		if err := yaml.Unmarshal(doc, &obj); err != nil {
			t.Fatal(err)
		}
		switch {
		case obj.Kind == "ClusterRole" && obj.Metadata.Name == "isolator-webhook":
			cluster = obj.Rules
		case obj.Kind == "Role" && obj.Metadata.Name == "isolator-webhook":
			namespaced = obj.Rules
		}
	}
	if cluster == nil || namespaced == nil {
		t.Fatal("manifests/base/rbac.yaml has no ClusterRole and Role isolator-webhook")
	}
	return cluster, namespaced
}

// TestSelfManagedLeastPrivilege runs the self-managed webhook as a user holding only the
// base rights and what docs/certificates.md adds for self-managed mode, through bootstrap
// and a CA rotation, and checks that it was never refused anything.
func TestSelfManagedLeastPrivilege(t *testing.T) {
	cp.SaveLogsOnFailure(t)
	ctx := testContext(t, 4*time.Minute)
	cleanCertObjects(ctx)
	t.Cleanup(func() { cleanCertObjects(context.Background()) })
	targets := namespaces(t, ctx, "rbac")

	const user = "isolator-e2e-webhook"
	c := cp.Client().RbacV1()
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}}
	baseCluster, baseNamespaced := baseRules(t)
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "isolator-e2e-webhook"}, Rules: append(baseCluster, selfClusterRules...)}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "isolator-e2e-webhook"}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: cr.Name}}
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "isolator-e2e-webhook", Namespace: harness.IsolatorNamespace}, Rules: append(baseNamespaced, selfNamespaceRules...)}
	rb := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "isolator-e2e-webhook", Namespace: harness.IsolatorNamespace}, Subjects: subject,
		RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name}}
	for _, create := range []func() error{
		func() error { _, err := c.ClusterRoles().Create(ctx, cr, metav1.CreateOptions{}); return err },
		func() error { _, err := c.ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); return err },
		func() error { _, err := c.Roles(role.Namespace).Create(ctx, role, metav1.CreateOptions{}); return err },
		func() error {
			_, err := c.RoleBindings(rb.Namespace).Create(ctx, rb, metav1.CreateOptions{})
			return err
		},
	} {
		if err := create(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		bg := context.Background()
		_ = c.ClusterRoleBindings().Delete(bg, crb.Name, metav1.DeleteOptions{})
		_ = c.ClusterRoles().Delete(bg, cr.Name, metav1.DeleteOptions{})
		_ = c.RoleBindings(rb.Namespace).Delete(bg, rb.Name, metav1.DeleteOptions{})
		_ = c.Roles(role.Namespace).Delete(bg, role.Name, metav1.DeleteOptions{})
	})
	kubeconfig, err := cp.UserKubeconfig(user)
	if err != nil {
		t.Fatal(err)
	}

	args := append([]string{"--kubeconfig", kubeconfig, "--leader-elect=true"}, selfArgs...)
	iso := startIsolator(t, ctx, harness.IsolatorOptions{Name: "least-privilege", SelfManagedCerts: true, NoWait: true, Args: args})
	registerWebhooks(t, ctx, iso.URL, nil)
	waitReady(t, ctx, iso)
	waitInjected(t, ctx)
	for _, tg := range targets {
		if err := createPod(ctx, tg); err != nil {
			t.Error(err)
		}
	}
	out, code, err := isolatorCLI(ctx, "certs", "rotate", "--kubeconfig", cp.Kubeconfig(), "--ca", "--wait", "--timeout", "1m")
	if err != nil || code != 0 {
		t.Errorf("certs rotate --ca: exit %d, %v\n%s", code, err, out)
	}
	waitInjected(t, ctx)
	for _, tg := range targets {
		if err := createPod(ctx, tg); err != nil {
			t.Error(err)
		}
	}
	// Stopping withdraws the report Lease (delete) too.
	if err := iso.Stop(harness.DefaultStopGrace); err != nil {
		t.Error(err)
	}
	reports, err := cp.Client().CoordinationV1().Leases(harness.IsolatorNamespace).List(ctx, metav1.ListOptions{LabelSelector: certs.ReportLabel + "=true"})
	if err != nil {
		t.Fatal(err)
	}
	if len(reports.Items) != 0 {
		t.Errorf("%d report Leases left after the only replica stopped, want its own withdrawn", len(reports.Items))
	}
	log, err := os.ReadFile(iso.LogPath())
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, "forbidden") {
			t.Errorf("the webhook was refused something with the documented permissions:\n%s", line)
		}
	}
}
