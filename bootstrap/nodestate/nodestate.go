// Package nodestate keeps the Node object in step with what the bootstrapper did: the
// isolator.dev/kata-runtime label that kata-rc's nodeSelector requires, the optional
// startup taint, and Events that tell an admin what happened on the node.
package nodestate

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// Names shared with the RuntimeClasses and the DaemonSet.
const (
	// LabelEnabled is set by the admin to opt a node in; the DaemonSet selects it.
	LabelEnabled = "isolator.dev/kata"
	// LabelRuntime is "false" while installing and "true" once containerd serves kata.
	LabelRuntime = "isolator.dev/kata-runtime"
	// TaintNotReady is the optional startup taint, removed once the node is labelled.
	TaintNotReady = "isolator.dev/kata-not-ready"

	component = "isolator-node"
)

// Event reasons.
const (
	ReasonInstalling    = "KataInstalling"
	ReasonReady         = "KataReady"
	ReasonFailed        = "KataInstallFailed"
	ReasonRolledBack    = "KataRolledBack"
	ReasonNoKVM         = "KataHostUnsupported"
	ReasonSandboxFailed = "KataSandboxFailed"
	ReasonDrift         = "KataDriftRepaired"
	ReasonUninstalled   = "KataUninstalled"
	ReasonKeptOnRollout = "KataKeptOnRollout"
)

// Node updates one Node object.
type Node struct {
	Client kubernetes.Interface
	Name   string
	// Namespace and DaemonSet name the bootstrapper's own DaemonSet, for the decision
	// whether a SIGTERM is a rollout or a removal.
	Namespace string
	DaemonSet string
}

// SetRuntimeLabel sets isolator.dev/kata-runtime to value, or removes it when value is "".
func (n *Node) SetRuntimeLabel(ctx context.Context, value string) error {
	var v any = value
	if value == "" {
		v = nil
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{LabelRuntime: v}}})
	if err != nil {
		return err
	}
	if _, err := n.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: component}); err != nil {
		return fmt.Errorf("node %s: set label %s=%q: %w", n.Name, LabelRuntime, value, err)
	}
	return nil
}

// RuntimeLabel returns the node's isolator.dev/kata-runtime label and whether it is set.
func (n *Node) RuntimeLabel(ctx context.Context) (string, bool, error) {
	node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return "", false, err
	}
	v, ok := node.Labels[LabelRuntime]
	return v, ok, nil
}

// RemoveStartupTaint removes isolator.dev/kata-not-ready when the node has it. It
// patches (the DaemonSet's RBAC grants patch, not update), with the resourceVersion it
// read, so a concurrent change to the taints is retried rather than overwritten.
func (n *Node) RemoveStartupTaint(ctx context.Context) (removed bool, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		kept := []corev1.Taint{}
		for _, t := range node.Spec.Taints {
			if t.Key != TaintNotReady {
				kept = append(kept, t)
			}
		}
		if len(kept) == len(node.Spec.Taints) {
			return nil
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": node.ResourceVersion},
			"spec":     map[string]any{"taints": kept},
		})
		if err != nil {
			return err
		}
		_, err = n.Client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: component})
		removed = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("node %s: remove taint %s: %w", n.Name, TaintNotReady, err)
	}
	return removed, nil
}

// Event records an Event on the Node. Events are best effort: a failure is returned for
// logging and never stops the bootstrapper.
func (n *Node) Event(ctx context.Context, eventType, reason, message string) error {
	node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: n.Name + ".", Namespace: metav1.NamespaceDefault},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Node", APIVersion: "v1", Name: n.Name, UID: node.UID,
		},
		Reason:              reason,
		Message:             message,
		Type:                eventType,
		Source:              corev1.EventSource{Component: component, Host: n.Name},
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		ReportingController: "isolator.dev/node",
		ReportingInstance:   component + "-" + n.Name,
	}
	_, err = n.Client.CoreV1().Events(metav1.NamespaceDefault).Create(ctx, ev, metav1.CreateOptions{})
	return err
}

// Selected decides, on SIGTERM, whether the DaemonSet still wants isolator on this node.
// It does when the node still carries isolator.dev/kata=enabled and the DaemonSet exists,
// is not being deleted and its nodeSelector matches the node: then the SIGTERM is a
// rollout and everything stays. When the API cannot be asked, it answers true with the
// error: uninstalling by mistake would break every running Kata pod.
func (n *Node) Selected(ctx context.Context) (selected bool, why string, err error) {
	node, err := n.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return true, "cannot read the node; assuming a rollout", err
	}
	if node.Labels[LabelEnabled] != "enabled" {
		return false, fmt.Sprintf("node label %s is %q, not \"enabled\"", LabelEnabled, node.Labels[LabelEnabled]), nil
	}
	if n.DaemonSet == "" {
		return true, "no DaemonSet name given; node label " + LabelEnabled + "=enabled", nil
	}
	ds, err := n.Client.AppsV1().DaemonSets(n.Namespace).Get(ctx, n.DaemonSet, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, fmt.Sprintf("DaemonSet %s/%s is gone", n.Namespace, n.DaemonSet), nil
	}
	if err != nil {
		return true, "cannot read the DaemonSet; assuming a rollout", err
	}
	return dsSelects(ds, node)
}

func dsSelects(ds *appsv1.DaemonSet, node *corev1.Node) (bool, string, error) {
	if ds.DeletionTimestamp != nil {
		return false, fmt.Sprintf("DaemonSet %s/%s is being deleted", ds.Namespace, ds.Name), nil
	}
	sel := labels.SelectorFromSet(ds.Spec.Template.Spec.NodeSelector)
	if !sel.Matches(labels.Set(node.Labels)) {
		return false, fmt.Sprintf("DaemonSet %s/%s nodeSelector %s no longer matches the node", ds.Namespace, ds.Name, sel), nil
	}
	return true, fmt.Sprintf("DaemonSet %s/%s still selects the node: a rollout", ds.Namespace, ds.Name), nil
}
