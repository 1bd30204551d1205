package main

import (
	"bufio"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/internal/testfixtures/fakekata"
)

// nodeName is the demo's one node.
const nodeName = "node-1"

// The demo's workload images: one program (e2e/demo/app) that every example container
// runs under its own image name, so that nothing is pulled. Init containers get the
// variant that exits.
const (
	appImage  = "localhost/isolator-demo/app:1"
	initImage = "localhost/isolator-demo/app-init:1"
)

// nodeUser is the identity isolator's node agent runs as: the isolator-node
// ServiceAccount, with exactly the RBAC of manifests/node/rbac.yaml.
const nodeUser = "system:serviceaccount:isolator-system:isolator-node"

// demoNode is the node the example pods run on.
type demoNode struct {
	*harness.Node
	cp *harness.ControlPlane
}

// startNode starts node-1 (harness.Node: containerd 2.4 with runc and a CNI bridge in
// namespaces of its own), imports the workload image under every image name the pods
// use, and starts kube-scheduler and the kubelet.
func startNode(ctx context.Context, cp *harness.ControlPlane, dir string, pods []*corev1.Pod) (*demoNode, error) {
	n, err := harness.StartNode(ctx, harness.NodeOptions{Dir: dir})
	if err != nil {
		return nil, err
	}
	node := &demoNode{Node: n, cp: cp}
	if err := node.importWorkloads(ctx, pods); err != nil {
		_ = n.Stop()
		return nil, err
	}
	if _, err := cp.StartScheduler(ctx); err != nil {
		_ = n.Stop()
		return nil, err
	}
	if err := n.StartKubelet(ctx, cp, nodeName); err != nil {
		_ = n.Stop()
		return nil, err
	}
	return node, nil
}

// importWorkloads builds e2e/demo/app into the two workload images and tags them with
// the image names of pods' containers and init containers.
func (n *demoNode) importWorkloads(ctx context.Context, pods []*corev1.Pod) error {
	var apps, inits []string
	for _, p := range pods {
		for _, c := range p.Spec.Containers {
			apps = append(apps, c.Image)
		}
		for _, c := range p.Spec.InitContainers {
			inits = append(inits, c.Image)
		}
	}
	for _, img := range []struct {
		ref  string
		args []string
		tags []string
	}{{appImage, nil, apps}, {initImage, []string{"--exit"}, inits}} {
		archive, err := harness.GoImage(ctx, n.Dir(), "github.com/isolator-dev/isolator/e2e/demo/app", img.ref, "65532:65532", img.args...)
		if err != nil {
			return err
		}
		if err := n.ImportImage(ctx, archive); err != nil {
			return err
		}
		var names []string
		for _, t := range img.tags {
			// The names as CRI looks them up: redis:7 is docker.io/library/redis:7.
			named, err := reference.ParseNormalizedNamed(t)
			if err != nil {
				return fmt.Errorf("image %q: %w", t, err)
			}
			names = append(names, reference.TagNameOnly(named).String())
		}
		if err := n.TagImage(ctx, img.ref, names...); err != nil {
			return err
		}
	}
	return nil
}

// pullNever makes the kubelet use the images imported into the node, never a registry.
// It changes nothing the policy looks at.
func pullNever(spec *corev1.PodSpec) {
	for i := range spec.InitContainers {
		spec.InitContainers[i].ImagePullPolicy = corev1.PullNever
	}
	for i := range spec.Containers {
		spec.Containers[i].ImagePullPolicy = corev1.PullNever
	}
}

// installKata runs `isolator node install` on the node, as the DaemonSet's pod would:
// Kata from a release whose shim is the stand-in (containerd's runc shim under Kata's
// name, e2e/tools/containerd/kata-standin), the kata handler added to containerd, a
// restart, the sandbox check, and the node label. Its output is shown as it comes.
func (n *demoNode) installKata(ctx context.Context) error {
	bin, err := harness.IsolatorBinary()
	if err != nil {
		return err
	}
	shim, err := harness.StandInShim()
	if err != nil {
		return err
	}
	release, err := (fakekata.Release{Version: "4.1.0", Shim: shim}).WriteTarball(n.Dir())
	if err != nil {
		return err
	}
	if err := n.cp.Apply(ctx, filepath.Join("node", "rbac.yaml")); err != nil {
		return err
	}
	kc, err := n.cp.UserKubeconfig(nodeUser, "system:serviceaccounts", "system:serviceaccounts:isolator-system")
	if err != nil {
		return err
	}
	cmd := n.Command(ctx, bin, "node", "install", "--node-name", nodeName, "--kubeconfig", kc,
		"--artifacts", release, "--cri-endpoint", n.Endpoint(), "--kvm-device", n.KVMDevice(),
		"--containerd-binary", n.Containerd(), "--restart", "signal")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	lines := bufio.NewScanner(out)
	for lines.Scan() {
		fmt.Println("    " + lines.Text())
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("isolator node install: %w", err)
	}
	return nil
}

// settle waits until every admitted pod has started (Running, or done), or, unless
// started is set, has been refused a node by the scheduler. It gives up quietly after
// two minutes: the table then shows the pods as they are.
func settle(ctx context.Context, cp *harness.ControlPlane, rows []row, started bool) {
	admitted := map[types.UID]bool{}
	for _, r := range rows {
		if r.uid != "" {
			admitted[types.UID(r.uid)] = true
		}
	}
	_ = harness.WaitFor(ctx, 2*time.Minute, "the pods to settle", func(ctx context.Context) (bool, error) {
		pods, err := cp.Client().CoreV1().Pods("").List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			if admitted[p.UID] && p.Status.Phase == corev1.PodPending && (started || unschedulable(p) == "") {
				return false, nil
			}
		}
		return true, nil
	})
}

// status is what the STATUS column says of a pod: its phase, with the runtime handler
// containerd started it with, or why it waits.
func (n *demoNode) status(ctx context.Context, r row) string {
	if r.uid == "" {
		return "-"
	}
	if n == nil {
		return "not run (no node)"
	}
	p, err := n.cp.Client().CoreV1().Pods(r.ns).Get(ctx, r.name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	switch p.Status.Phase {
	case corev1.PodRunning, corev1.PodSucceeded:
		handler, err := n.PodHandler(ctx, string(p.UID))
		if err != nil {
			return string(p.Status.Phase)
		}
		if handler == "kata" {
			handler = "kata, the stand-in"
		}
		return fmt.Sprintf("%s (%s)", p.Status.Phase, handler)
	case corev1.PodPending:
		if why := unschedulable(p); why != "" {
			return "Pending: " + why
		}
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			if w := cs.State.Waiting; w != nil {
				return "Pending: " + w.Reason
			}
		}
	}
	return string(p.Status.Phase)
}

// unschedulable is the scheduler's reason for not placing the pod, or "".
func unschedulable(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			// "0/1 nodes are available: 1 node(s) didn't match ... preemption: ..."
			msg, _, _ := strings.Cut(c.Message, " preemption:")
			if _, rest, ok := strings.Cut(msg, " are available: "); ok {
				msg = rest
			}
			return msg
		}
	}
	return ""
}

// showOutput prints what the first running pod of each runtime class printed: proof
// that it ran, and where.
func (n *demoNode) showOutput(ctx context.Context, rows []row) {
	shown := map[string]bool{}
	for _, r := range rows {
		if r.uid == "" || shown[r.class] {
			continue
		}
		p, err := n.cp.Client().CoreV1().Pods(r.ns).Get(ctx, r.name, metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		out, err := n.PodOutput(p, p.Spec.Containers[0].Name)
		if err != nil {
			continue
		}
		if !shown["header"] {
			fmt.Printf("\nWhat they print (from the kubelet's logs on %s):\n", nodeName)
			shown["header"] = true
		}
		shown[r.class] = true
		fmt.Printf("  %s/%s (%s): %s\n", r.ns, r.name, r.class, out)
	}
	if shown["kata-rc"] {
		fmt.Println("  (a Kata VM would show its guest kernel; the stand-in runs runc containers on the machine's)")
	}
}

// kataRuntimeLabel is the node's isolator.dev/kata-runtime label.
func (n *demoNode) kataRuntimeLabel(ctx context.Context) string {
	node, err := n.cp.Client().CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	if v, ok := node.Labels[nodestate.LabelRuntime]; ok {
		return v
	}
	return "(none)"
}
