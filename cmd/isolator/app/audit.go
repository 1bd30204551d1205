package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/isolator-dev/isolator/policy"
	"github.com/isolator-dev/isolator/webhook"
)

type auditOptions struct {
	kubeconfig  string
	namespace   string
	policyFiles []string
	podNS       string
	output      string
	all         bool
}

func newPolicyAuditCommand(s streams) *cobra.Command {
	o := auditOptions{}
	cmd := &cobra.Command{
		Use:   "audit --kubeconfig K [--policy FILE...] [-o text|json]",
		Short: "List running pods whose runtime class differs from what the policy decides",
		Long: `Compare the pods that exist in a cluster with what the policy would decide for
them if they were created now. Use it before turning a rule on (or from Audit to
Enforce) to see which workloads it would move to Kata, replace, or deny, and after
a rollout to find pods created before isolator or while it was down.

By default the policy is the cluster's own: the policy ConfigMaps in --namespace.
With --policy, the given files are used instead (a policy you are about to apply).

A pod is listed when the class it runs with differs from the decided class, or
when the policy would deny it. --all lists every pod.`,
		Example: `  # Which pods does the cluster's policy disagree with?
  isolator policy audit --kubeconfig ~/.kube/config

  # What would a new policy change, before applying it?
  isolator policy audit --kubeconfig ~/.kube/config --policy new-policy.yaml

  # Machine-readable, one JSON object per pod
  isolator policy audit --kubeconfig ~/.kube/config -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.output != "text" && o.output != "json" {
				return usageError("-o must be text or json, not %q", o.output)
			}
			return runAudit(cmd.Context(), s, o)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses $KUBECONFIG or the in-cluster service account")
	fs.StringVar(&o.namespace, "namespace", "isolator-system", "namespace of the cluster's policy ConfigMaps; those in any other namespace are team policies")
	fs.StringArrayVar(&o.policyFiles, "policy", nil, "use these policy files instead of the cluster's ConfigMaps; repeat for several")
	fs.StringVar(&o.podNS, "pods-namespace", "", "audit the pods of one namespace only; empty audits every namespace")
	fs.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	fs.BoolVar(&o.all, "all", false, "list every pod, not only those that differ")
	return cmd
}

// auditLine is one pod of `policy audit -o json`.
type auditLine struct {
	Pod          string `json:"pod"`
	Current      string `json:"currentRuntimeClass"`
	RuntimeClass string `json:"runtimeClass"`
	Rule         string `json:"rule"`
	Action       string `json:"action"`
	Reason       string `json:"reason"`
	Differs      bool   `json:"differs"`
}

func runAudit(ctx context.Context, s streams, o auditOptions) error {
	cfg, err := restConfig(o.kubeconfig)
	if err != nil {
		return failure(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return failure(err)
	}
	var sources []policy.Source
	if len(o.policyFiles) > 0 {
		var ok bool
		sources, ok, err = loadPolicies(s, o.policyFiles, o.namespace, s.err)
		if err != nil {
			return err
		}
		if !ok {
			return failure(fmt.Errorf("the policies above are invalid"))
		}
	} else {
		// The cluster's policies, and with them every namespace's team policy.
		sel := metav1.ListOptions{LabelSelector: policy.PolicyLabel + "=true"}
		cms, err := cs.CoreV1().ConfigMaps(metav1.NamespaceAll).List(ctx, sel)
		if apierrors.IsForbidden(err) {
			fmt.Fprintf(s.err, "warning: you may not list ConfigMaps in every namespace, so team policies are left out: %v\n", err)
			cms, err = cs.CoreV1().ConfigMaps(o.namespace).List(ctx, sel)
		}
		if err != nil {
			return failure(fmt.Errorf("listing policy ConfigMaps: %w", err))
		}
		for i := range cms.Items {
			src, errs := webhook.ParseConfigMap(&cms.Items[i])
			if len(errs) > 0 {
				fmt.Fprintf(s.err, "warning: ConfigMap %s/%s is invalid and is skipped: %v\n", cms.Items[i].Namespace, cms.Items[i].Name, errs.ToAggregate())
				continue
			}
			src.AsTeam(o.namespace)
			sources = append(sources, *src)
		}
		if len(sources) == 0 {
			fmt.Fprintf(s.err, "warning: no valid policy ConfigMaps (label %s=true) in namespace %s\n", policy.PolicyLabel, o.namespace)
		}
	}
	snap, err := policy.Compile(sources...)
	if err != nil {
		return failure(err)
	}
	nsList, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return failure(fmt.Errorf("listing namespaces: %w", err))
	}
	nsLabels := map[string]map[string]string{}
	for _, ns := range nsList.Items {
		nsLabels[ns.Name] = ns.Labels
	}
	var lines []auditLine
	var cont string
	for {
		pods, err := cs.CoreV1().Pods(o.podNS).List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
		if err != nil {
			return failure(fmt.Errorf("listing pods: %w", err))
		}
		for i := range pods.Items {
			if l := auditPod(snap, &pods.Items[i], nsLabels[pods.Items[i].Namespace]); l.Differs || o.all {
				lines = append(lines, l)
			}
		}
		if cont = pods.Continue; cont == "" {
			break
		}
	}
	if o.output == "json" {
		enc := json.NewEncoder(s.out)
		enc.SetEscapeHTML(false)
		for _, l := range lines {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	return writeAuditText(s.out, lines)
}

// auditPod decides an existing pod as if it were created now. A class isolator set
// itself (its annotation matches) is not the pod's own choice, as in the webhook.
func auditPod(snap *policy.Snapshot, pod *corev1.Pod, nsLabels map[string]string) auditLine {
	current := ""
	if pod.Spec.RuntimeClassName != nil {
		current = *pod.Spec.RuntimeClassName
	}
	l := auditLine{Pod: pod.Namespace + "/" + pod.Name, Current: current}
	p := policy.Pod{Metadata: policy.PodMeta{Name: pod.Name, Namespace: pod.Namespace, Labels: pod.Labels, Annotations: pod.Annotations},
		Spec: policy.PodSpec{RuntimeClassName: pod.Spec.RuntimeClassName, HostNetwork: pod.Spec.HostNetwork, HostPID: pod.Spec.HostPID, HostIPC: pod.Spec.HostIPC}}
	for _, c := range pod.Spec.InitContainers {
		p.Spec.InitContainers = append(p.Spec.InitContainers, policy.Container{Name: c.Name, Image: c.Image})
	}
	for _, c := range pod.Spec.Containers {
		p.Spec.Containers = append(p.Spec.Containers, policy.Container{Name: c.Name, Image: c.Image})
	}
	facts, err := p.Facts(pod.Namespace, nsLabels)
	if err != nil {
		l.Action, l.Reason, l.Differs = string(policy.ActionDeny), err.Error(), true
		return l
	}
	d, _ := snap.EvaluatePod(&p, &facts)
	l.RuntimeClass, l.Rule, l.Action, l.Reason = d.RuntimeClass, d.Rule, string(d.Action), d.Reason
	switch d.Action {
	case policy.ActionDeny:
		l.Differs = true
	case policy.ActionNone:
		l.Differs = false
	default:
		l.Differs = d.RuntimeClass != current
	}
	return l
}

func writeAuditText(w io.Writer, lines []auditLine) error {
	if len(lines) == 0 {
		_, err := fmt.Fprintln(w, "every pod runs with the runtime class the policy decides")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "POD\tCURRENT\tPOLICY\tACTION\tRULE\tWHY")
	for _, l := range lines {
		fmt.Fprintln(tw, strings.Join([]string{l.Pod, dash(l.Current), dash(l.RuntimeClass), l.Action, dash(l.Rule), l.Reason}, "\t"))
	}
	return tw.Flush()
}
