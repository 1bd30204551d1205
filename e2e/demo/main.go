// Command demo runs isolator on a local control plane and shows what it decides: it
// starts etcd, kube-apiserver and kube-controller-manager, the real isolator webhook,
// installs the RuntimeClasses and the example policies from manifests/, creates the
// example pods and a Deployment in several namespaces, and prints a table of where each
// pod landed and why. It keeps running until Ctrl-C so that kubectl can look around;
// DEMO_EXIT=1 prints and exits, for scripts.
//
// As root it also runs a node (harness.Node: containerd 2.4, runc, a CNI bridge, a
// kubelet and kube-scheduler, in namespaces of its own), so the pods really run: the
// table's STATUS column says Running for runc-rc pods, and Pending with the scheduler's
// reason for kata-rc pods until `isolator node install` has installed Kata on the node
// and a sandbox started there. Kata's VM cannot start on these machines, so the Kata
// release the demo installs has a stand-in shim: containerd's runc shim under Kata's
// name (e2e/tools/containerd/kata-standin). kata-rc pods then run, in runc containers.
//
// Run it with `make demo`, which builds the binaries it needs first.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/e2e/harness"
	"github.com/isolator-dev/isolator/policy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(ctx context.Context) error {
	manifests, err := harness.ManifestsDir()
	if err != nil {
		return err
	}
	logDir, err := os.MkdirTemp("", "isolator-demo-logs-")
	if err != nil {
		return err
	}
	withNode := os.Geteuid() == 0
	opts := harness.Options{LogDir: logDir}
	if withNode {
		// The kubelet registers its Node with the not-ready taint, which the node
		// lifecycle controller lifts once the Node is Ready (the flag adds to the
		// harness's list).
		opts.ControllerManagerFlags = []string{"--controllers=node-lifecycle-controller"}
	}
	step("starting etcd, kube-apiserver and kube-controller-manager on loopback ports (logs in %s)", logDir)
	startCtx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	cp, err := harness.Start(startCtx, opts)
	if err != nil {
		return err
	}
	defer func() {
		step("stopping the control plane")
		_ = cp.Stop()
	}()

	step("starting the isolator webhook and registering it from manifests/base")
	iso, err := cp.StartIsolator(startCtx, harness.IsolatorOptions{})
	if err != nil {
		return err
	}
	if err := iso.Register(startCtx, cp.Client(), filepath.Join(manifests, "base")); err != nil {
		return err
	}
	step("installing the RuntimeClasses (manifests/runtimeclasses) and the example policies (manifests/examples/policies.yaml)")
	policyFile := filepath.Join(manifests, "examples", "policies.yaml")
	if err := cp.Apply(startCtx, "runtimeclasses", policyFile); err != nil {
		return err
	}
	snap, err := loadPolicy(policyFile)
	if err != nil {
		return err
	}
	if err := harness.WaitFor(startCtx, 30*time.Second, "the webhook to load the policy", func(ctx context.Context) (bool, error) {
		text, err := iso.Metrics(ctx)
		return err == nil && strings.Contains(text, fmt.Sprintf("isolator_policy_rules %d", snap.Len())), err
	}); err != nil {
		return err
	}

	namespaces, pods, err := readExamples(filepath.Join(manifests, "examples", "pods.yaml"))
	if err != nil {
		return err
	}
	dep := checkoutDeployment()
	var node *demoNode
	if withNode {
		dir, err := os.MkdirTemp("", "isolator-demo-node-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		step("starting %s: containerd 2.4 with runc and a CNI bridge, in mount and network namespaces of its own, a kubelet and kube-scheduler (files in %s)", nodeName, dir)
		if node, err = startNode(startCtx, cp, dir, append(pods, &corev1.Pod{Spec: dep.Spec.Template.Spec})); err != nil {
			// A root shell without the privileges a node needs (a container, say)
			// still shows every decision.
			step("%s did not start, so the pods are admitted and stored but not run: %v", nodeName, err)
			node = nil
		} else {
			defer func() {
				step("stopping %s and its pods", nodeName)
				_ = node.Stop()
			}()
		}
	} else {
		step("not running as root, so no node: the pods are admitted and stored but not run (a node needs mount and network namespaces and containerd; run make demo as root to see them run)")
	}

	step("creating the example namespaces and pods (manifests/examples/pods.yaml) and a Deployment")
	rows, err := createExamples(startCtx, cp, snap, namespaces, pods)
	if err != nil {
		return err
	}
	depRows, err := createDeployment(startCtx, cp, snap, dep)
	if err != nil {
		return err
	}
	rows = append(rows, depRows...)
	if node != nil {
		step("waiting for the pods to run on %s, or for the scheduler to say why not", nodeName)
		settle(startCtx, cp, rows, false)
	}
	printTable(startCtx, node, rows, true)

	if node != nil {
		fmt.Printf("\n%s is labelled %s=%s: no Kata yet, so kata-rc pods wait.\n\n", nodeName, nodestate.LabelRuntime, node.kataRuntimeLabel(startCtx))
		step("installing Kata on %s with `isolator node install`, as the DaemonSet does (a stand-in shim takes the Kata VM's place: see README)", nodeName)
		if err := node.installKata(startCtx); err != nil {
			// What isolator is for: a node where no Kata sandbox starts is not
			// labelled, and kata-rc pods wait rather than fail there.
			step("%v; %s is labelled %s=%s, so the kata-rc pods stay Pending", err, nodeName, nodestate.LabelRuntime, node.kataRuntimeLabel(startCtx))
		} else {
			step("%s is labelled %s=%s; waiting for the kata-rc pods to run", nodeName, nodestate.LabelRuntime, node.kataRuntimeLabel(startCtx))
			settle(startCtx, cp, rows, true)
		}
		printTable(startCtx, node, rows, false)
		node.showOutput(startCtx, rows)
	}

	tools := harness.ToolsBin()
	fmt.Printf(`
The control plane keeps running. To look around with kubectl:

  export KUBECONFIG=%s
  %s/kubectl get pods -A -o custom-columns=NAMESPACE:.metadata.namespace,POD:.metadata.name,CLASS:.spec.runtimeClassName,RULE:.metadata.annotations.isolator\.dev/rule,NODE:.spec.nodeName
  %s/kubectl -n isolator-system get configmaps -l isolator.dev/policy=true

The webhook's log is %s and its metrics are at %s.
`, cp.Kubeconfig(), tools, tools, iso.LogPath(), iso.MetricsURL)
	if node != nil {
		fmt.Printf("%s's kubelet log is %s and its containerd's %s (removed when the demo stops).\n", nodeName, node.KubeletLog(), node.ContainerdLog())
	}
	fmt.Println("Press Ctrl-C to stop.")
	if os.Getenv("DEMO_EXIT") == "1" {
		return nil
	}
	<-ctx.Done()
	return nil
}

func loadPolicy(path string) (*policy.Snapshot, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	srcs, errs := policy.ReadSources(path, f)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return policy.Compile(srcs...)
}

// row is one pod of the table: shown as pod, found by name (and uid, empty when the
// pod was refused).
type row struct{ ns, pod, name, uid, class, rule, why string }

// lastWarning keeps the admission warning of the last request (pods are created one
// at a time).
type lastWarning struct{ text string }

func (w *lastWarning) HandleWarningHeader(_ int, _ string, text string) { w.text = text }

// explain gives the reason for a stored pod's class, evaluating the same policy the
// webhook enforces, and says so if the two ever disagree.
func explain(snap *policy.Snapshot, p *corev1.Pod, nsLabels map[string]string) string {
	var pp policy.Pod
	raw, err := yaml.Marshal(p)
	if err == nil {
		err = yaml.Unmarshal(raw, &pp)
	}
	if err != nil {
		return err.Error()
	}
	facts, err := pp.Facts(p.Namespace, nsLabels)
	if err != nil {
		return err.Error()
	}
	d, _ := snap.EvaluatePod(&pp, &facts)
	if d.Rule != p.Annotations[policy.AnnotationRule] && d.Action != policy.ActionKeep && d.Action != policy.ActionNone {
		return fmt.Sprintf("(the webhook chose %s, but the policy file says %s) %s", p.Annotations[policy.AnnotationRule], d.Rule, d.Reason)
	}
	return d.Reason
}

// readExamples reads the namespaces and pods of the examples file. The pods' images
// are never pulled (pullNever): the demo's node has them.
func readExamples(path string) ([]corev1.Namespace, []*corev1.Pod, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	docs, err := policy.SplitDocuments(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var namespaces []corev1.Namespace
	var pods []*corev1.Pod
	for _, doc := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		switch tm.Kind {
		case "Namespace":
			var ns corev1.Namespace
			if err := yaml.UnmarshalStrict(doc, &ns); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", path, err)
			}
			namespaces = append(namespaces, ns)
		case "Pod":
			var p corev1.Pod
			if err := yaml.UnmarshalStrict(doc, &p); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", path, err)
			}
			if p.Namespace == "" {
				p.Namespace = metav1.NamespaceDefault
			}
			pullNever(&p.Spec)
			pods = append(pods, &p)
		}
	}
	return namespaces, pods, nil
}

func createExamples(ctx context.Context, cp *harness.ControlPlane, snap *policy.Snapshot, namespaces []corev1.Namespace, pods []*corev1.Pod) ([]row, error) {
	warn := &lastWarning{}
	cfg := cp.RESTConfig()
	cfg.WarningHandler = warn
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	for _, ns := range namespaces {
		if _, err := cp.CreateNamespace(ctx, ns.Name, ns.Labels); err != nil {
			return nil, err
		}
	}
	var rows []row
	for _, p := range pods {
		if _, err := cp.CreateNamespace(ctx, p.Namespace, nil); err != nil {
			return nil, err
		}
		ns, err := c.CoreV1().Namespaces().Get(ctx, p.Namespace, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		warn.text = ""
		got, err := c.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		var status apierrors.APIStatus
		switch {
		case err == nil && warn.text != "":
			rows = append(rows, row{p.Namespace, p.Name, p.Name, string(got.UID), classOf(got), got.Annotations[policy.AnnotationRule], "warning: " + warn.text})
		case err == nil:
			rows = append(rows, row{p.Namespace, p.Name, p.Name, string(got.UID), classOf(got), got.Annotations[policy.AnnotationRule], explain(snap, got, ns.Labels)})
		case errors.As(err, &status) && apierrors.IsForbidden(err):
			rows = append(rows, row{p.Namespace, p.Name, p.Name, "", "DENIED", "", status.Status().Message})
		default:
			return nil, fmt.Errorf("creating pod %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return rows, nil
}

// checkoutDeployment is the demo's Deployment: two replicas of a shop image.
func checkoutDeployment() *appsv1.Deployment {
	replicas := int32(2)
	labels := map[string]string{"app": "checkout"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout", Namespace: "shop"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "checkout", Image: "registry.example.com/shop/checkout:3.2"}}},
			},
		},
	}
	pullNever(&dep.Spec.Template.Spec)
	return dep
}

func createDeployment(ctx context.Context, cp *harness.ControlPlane, snap *policy.Snapshot, dep *appsv1.Deployment) ([]row, error) {
	c := cp.Client()
	replicas := int(*dep.Spec.Replicas)
	if _, err := c.AppsV1().Deployments("shop").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	ns, err := c.CoreV1().Namespaces().Get(ctx, "shop", metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	var pods *corev1.PodList
	err = harness.WaitFor(ctx, time.Minute, "the Deployment's pods", func(ctx context.Context) (bool, error) {
		var err error
		pods, err = c.CoreV1().Pods("shop").List(ctx, metav1.ListOptions{LabelSelector: "app=checkout"})
		return err == nil && len(pods.Items) == replicas, err
	})
	if err != nil {
		return nil, err
	}
	var rows []row
	for i := range pods.Items {
		p := &pods.Items[i]
		rows = append(rows, row{p.Namespace, p.Name + " (Deployment checkout)", p.Name, string(p.UID), classOf(p), p.Annotations[policy.AnnotationRule], explain(snap, p, ns.Labels)})
	}
	return rows, nil
}

func classOf(p *corev1.Pod) string {
	if p.Spec.RuntimeClassName == nil {
		return "-"
	}
	return *p.Spec.RuntimeClassName
}

// printTable prints the rows with each pod's STATUS on the node; full adds the rule
// and the reason of each decision.
func printTable(ctx context.Context, node *demoNode, rows []row, full bool) {
	fmt.Println()
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	if full {
		fmt.Fprintln(tw, "NAMESPACE\tPOD\tRUNTIMECLASS\tSTATUS\tRULE\tWHY")
	} else {
		fmt.Fprintln(tw, "NAMESPACE\tPOD\tRUNTIMECLASS\tSTATUS")
	}
	for _, r := range rows {
		rule := r.rule
		if rule == "" {
			rule = "-"
		}
		if full {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ns, r.pod, r.class, node.status(ctx, r), rule, r.why)
		} else {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.ns, r.pod, r.class, node.status(ctx, r))
		}
	}
	_ = tw.Flush()
}
