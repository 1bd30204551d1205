package nodestate

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDaemonSetSelects(t *testing.T) {
	now := metav1.Now()
	ds := func(sel map[string]string, deleting bool) *appsv1.DaemonSet {
		d := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Namespace: "isolator-system", Name: "isolator-node"}}
		d.Spec.Template.Spec.NodeSelector = sel
		if deleting {
			d.DeletionTimestamp = &now
		}
		return d
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{LabelEnabled: "enabled", "pool": "a"}}}
	cases := []struct {
		name    string
		ds      *appsv1.DaemonSet
		want    bool
		wantWhy string
	}{
		{"selector matches: rollout", ds(map[string]string{LabelEnabled: "enabled"}, false), true, "still selects"},
		{"no selector: rollout", ds(nil, false), true, "still selects"},
		{"selector no longer matches", ds(map[string]string{LabelEnabled: "enabled", "pool": "b"}, false), false, "no longer matches"},
		{"being deleted", ds(map[string]string{LabelEnabled: "enabled"}, true), false, "being deleted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, why, err := dsSelects(c.ds, node)
			if err != nil || got != c.want || !strings.Contains(why, c.wantWhy) {
				t.Errorf("dsSelects = %v, %q, %v; want %v, %q", got, why, err, c.want, c.wantWhy)
			}
		})
	}
}
