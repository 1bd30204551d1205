package app

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/isolator-dev/isolator/policy"
)

func newPolicyCommand(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Validate RuntimePolicies and explain their decisions, offline",
		Long: `Work with RuntimePolicy documents without a cluster.

A policy file may hold bare RuntimePolicy documents or policy ConfigMaps (the
RuntimePolicy under data key policy.yaml), several per file separated by ---,
or a List of them as kubectl get -o yaml prints it. Use - to read standard input.`,
	}
	cmd.AddCommand(newPolicyValidateCommand(s), newPolicyExplainCommand(s), newPolicyAuditCommand(s), newPolicyBackstopCommand(s), newPolicySchemaCommand(s))
	return cmd
}

// defaultIsolatorNamespace is where isolator and the cluster policies live by default.
const defaultIsolatorNamespace = "isolator-system"

// isolatorNamespaceFlag registers --namespace for commands that read policy ConfigMaps
// from files: a ConfigMap in any other namespace is that namespace's team policy.
func isolatorNamespaceFlag(cmd *cobra.Command, ns *string) {
	cmd.Flags().StringVar(ns, "namespace", defaultIsolatorNamespace, "isolator's namespace, where the cluster policies live; a policy ConfigMap in any other namespace is that namespace's team policy")
}

func newPolicyValidateCommand(s streams) *cobra.Command {
	var namespace string
	cmd := &cobra.Command{
		Use:   "validate FILE...",
		Short: "Check policies and print every problem with its field path",
		Long: `Check RuntimePolicy documents and policy ConfigMaps.

Every problem is printed with the file, the document and the field path, e.g.
  team-a.yaml (ConfigMap team-a): data[policy.yaml].spec.rules[0].runtimeClass: Not found: "kata"
The policies are then merged as the webhook merges them, and disagreements
between them are printed as warnings.

Exit status: 0 when every policy is valid, 1 when any is invalid, 2 on a usage
error such as a missing file.`,
		Example: `  # Validate one policy file
  isolator policy validate policy.yaml

  # Validate every team's ConfigMap together, as the webhook would merge them
  isolator policy validate manifests/examples/*.yaml

  # Validate the policies a cluster holds, as one List
  kubectl get configmaps -n isolator-system -l isolator.dev/policy=true -o yaml | isolator policy validate -

  # Validate what a generator prints
  render-policies | isolator policy validate -`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sources, ok, err := loadPolicies(s, args, namespace, s.out)
			if err != nil {
				return err
			}
			if !ok {
				return failure(fmt.Errorf("invalid policy"))
			}
			snap, err := policy.Compile(sources...)
			if err != nil {
				fmt.Fprintln(s.out, err)
				return failure(fmt.Errorf("invalid policy"))
			}
			for _, w := range snap.Warnings() {
				fmt.Fprintf(s.out, "warning: %s\n", w)
			}
			for _, src := range sources {
				fmt.Fprintf(s.out, "%s: valid (%s)\n", src.Origin, plural(len(src.Policy.Spec.Rules), "rule"))
			}
			return nil
		},
	}
	isolatorNamespaceFlag(cmd, &namespace)
	return cmd
}

// compilePolicies reads, validates and merges policy files for the commands that
// evaluate them, printing merge warnings to the error stream.
func compilePolicies(s streams, files []string, namespace string) (*policy.Snapshot, error) {
	if len(files) == 0 {
		return nil, usageError("--policy is required: name at least one policy file")
	}
	sources, ok, err := loadPolicies(s, files, namespace, s.err)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, failure(fmt.Errorf("the policies above are invalid; fix them first (isolator policy validate)"))
	}
	snap, err := policy.Compile(sources...)
	if err != nil {
		return nil, failure(err)
	}
	for _, w := range snap.Warnings() {
		fmt.Fprintf(s.err, "warning: %s\n", w)
	}
	return snap, nil
}

// loadPolicies reads and validates every policy in files, printing each problem to w.
// A ConfigMap outside namespace is that namespace's team policy. ok is false when any
// document was invalid; err is a usage error (unreadable file).
func loadPolicies(s streams, files []string, namespace string, w io.Writer) (sources []policy.Source, ok bool, err error) {
	ok = true
	for _, file := range files {
		data, name, err := readInput(s, file)
		if err != nil {
			return nil, false, usageError("%v", err)
		}
		srcs, docErrs := policy.ReadSources(name, strings.NewReader(string(data)))
		for _, de := range docErrs {
			fmt.Fprintln(w, de.Error())
			ok = false
		}
		if len(srcs) == 0 && len(docErrs) == 0 {
			// An empty file is more likely a wrong path or a failed generator than an
			// intentionally empty policy.
			fmt.Fprintf(w, "%s: no RuntimePolicy or policy ConfigMap found\n", name)
			ok = false
		}
		for _, src := range srcs {
			if errs := policy.Validate(src.Policy, src.Root); len(errs) > 0 {
				fmt.Fprintln(w, (&policy.DocumentError{Origin: src.Origin, Errs: errs}).Error())
				ok = false
				continue
			}
			// Two policies of the same name are refused by Compile, with both origins.
			src.AsTeam(namespace)
			sources = append(sources, src)
		}
	}
	return sources, ok, nil
}

// readInput reads a file, or standard input for "-".
func readInput(s streams, file string) ([]byte, string, error) {
	if file == "-" {
		// Read one byte past the limit so that an over-long stream is refused (by
		// SplitDocuments) rather than cut short.
		data, err := io.ReadAll(io.LimitReader(s.in, 64*policy.MaxDocumentBytes+1))
		return data, "stdin", err
	}
	data, err := os.ReadFile(file)
	return data, file, err
}

func newPolicyExplainCommand(s streams) *cobra.Command {
	var (
		policyFiles []string
		podFile     string
		output      string
		namespace   string
	)
	cmd := &cobra.Command{
		Use:   "explain --policy FILE... -f PODS.yaml [-o text|json]",
		Short: "Show which runtime class each pod would get, from which rule, and why",
		Long: `Evaluate pods against policies exactly as the webhook does, without a cluster.

PODS.yaml holds Pods (or a List of them, as 'kubectl get pods -o yaml' prints),
and optionally Namespace objects that supply namespace labels. A pod's namespace
is metadata.namespace, "default" when unset. Every namespace carries the label
kubernetes.io/metadata.name, as in a real cluster.

With -o json, each pod is one JSON object on its own line:
  {"pod":"<ns>/<name>","runtimeClass":"kata-rc","rule":"<configmap-or-file>/<rule>",
   "action":"set|keep|replace|deny|none","reason":"..."}
A rule is named after the ConfigMap that holds it, or the policy's metadata.name,
or the policy file's name without extension; a team policy's rule (a ConfigMap
outside --namespace) as <namespace>/<configmap>/<rule>.`,
		Example: `  # Explain the example pods against the example policies
  isolator policy explain --policy manifests/examples/policies.yaml -f manifests/examples/pods.yaml

  # Explain the pods running in a cluster, as JSON lines
  kubectl get pods -A -o yaml | isolator policy explain --policy policy.yaml -f - -o json

  # Several teams' policies together
  isolator policy explain --policy team-a.yaml --policy team-b.yaml -f pods.yaml

  # The cluster's policies with a team's own (its ConfigMap in namespace tenant-a)
  isolator policy explain --policy platform.yaml --policy tenant-a-policy.yaml -f pods.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(policyFiles) == 0 {
				return usageError("--policy is required: name at least one policy file")
			}
			if podFile == "" {
				return usageError("-f is required: name a file of Pods (or - for standard input)")
			}
			if output != "text" && output != "json" {
				return usageError("-o must be text or json, not %q", output)
			}
			snap, err := compilePolicies(s, policyFiles, namespace)
			if err != nil {
				return err
			}
			data, name, err := readInput(s, podFile)
			if err != nil {
				return usageError("%v", err)
			}
			pods, err := readPods(name, data)
			if err != nil {
				return failure(err)
			}
			results := make([]explained, 0, len(pods))
			for _, p := range pods {
				results = append(results, explainPod(snap, p))
			}
			if output == "json" {
				return writeExplainJSON(s.out, results)
			}
			return writeExplainText(s.out, results)
		},
	}
	cmd.Flags().StringArrayVar(&policyFiles, "policy", nil, "policy file (RuntimePolicy or ConfigMap YAML, - for stdin); repeat for several")
	cmd.Flags().StringVarP(&podFile, "filename", "f", "", "file of Pods and Namespaces to explain (- for stdin)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	isolatorNamespaceFlag(cmd, &namespace)
	return cmd
}

// explainLine is the JSON contract of `policy explain -o json`.
type explainLine struct {
	Pod          string `json:"pod"`
	RuntimeClass string `json:"runtimeClass"`
	Rule         string `json:"rule"`
	Action       string `json:"action"`
	Reason       string `json:"reason"`
}

type explained struct {
	explainLine
	audit policy.Outcome
}

type podInput struct {
	pod      policy.Pod
	nsLabels map[string]string
}

func explainPod(snap *policy.Snapshot, in podInput) explained {
	ns := in.pod.Metadata.Namespace
	e := explained{explainLine: explainLine{Pod: ns + "/" + in.pod.DisplayName()}}
	facts, err := in.pod.Facts(ns, in.nsLabels)
	if err != nil {
		e.Action, e.Reason = string(policy.ActionDeny), err.Error()
		return e
	}
	d, _ := snap.EvaluatePod(&in.pod, &facts)
	e.RuntimeClass, e.Rule, e.Action, e.Reason = d.RuntimeClass, d.Rule, string(d.Action), d.Reason
	e.audit = d.Audit
	return e
}

// readPods reads Pods, Lists of Pods and Namespaces from a YAML stream and attaches to
// each pod its namespace's labels.
func readPods(file string, data []byte) ([]podInput, error) {
	docs, err := policy.SplitDocuments(strings.NewReader(string(data)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	type object struct {
		Kind     string            `json:"kind"`
		Metadata policy.PodMeta    `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	nsLabels := map[string]map[string]string{}
	var pods []policy.Pod
	var visit func(where string, raw []byte) error
	visit = func(where string, raw []byte) error {
		var o object
		if err := yaml.Unmarshal(raw, &o); err != nil {
			return fmt.Errorf("%s: not valid YAML: %w", where, err)
		}
		switch o.Kind {
		case "Pod":
			var p policy.Pod
			if err := yaml.Unmarshal(raw, &p); err != nil {
				return fmt.Errorf("%s: pod %s: %w", where, o.Metadata.Name, err)
			}
			if p.Metadata.Namespace == "" {
				p.Metadata.Namespace = "default"
			}
			pods = append(pods, p)
		case "Namespace":
			l := map[string]string{}
			for k, v := range o.Metadata.Labels {
				l[k] = v
			}
			l["kubernetes.io/metadata.name"] = o.Metadata.Name
			nsLabels[o.Metadata.Name] = l
		case "List", "PodList", "NamespaceList":
			for i, item := range o.Items {
				if err := visit(fmt.Sprintf("%s items[%d]", where, i), item); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("%s: kind %q is not a Pod, Namespace or List; explain reads pods (kubectl get pods -o yaml)", where, o.Kind)
		}
		return nil
	}
	for i, doc := range docs {
		where := file
		if len(docs) > 1 {
			where = fmt.Sprintf("%s (document %d)", file, i+1)
		}
		if err := visit(where, doc); err != nil {
			return nil, err
		}
	}
	out := make([]podInput, 0, len(pods))
	for _, p := range pods {
		l, ok := nsLabels[p.Metadata.Namespace]
		if !ok {
			l = map[string]string{"kubernetes.io/metadata.name": p.Metadata.Namespace}
		}
		out = append(out, podInput{pod: p, nsLabels: l})
	}
	return out, nil
}

func writeExplainJSON(w io.Writer, results []explained) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	for _, r := range results {
		if err := enc.Encode(r.explainLine); err != nil {
			return err
		}
	}
	return nil
}

func writeExplainText(w io.Writer, results []explained) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	hasAudit := false
	for _, r := range results {
		hasAudit = hasAudit || r.audit.Action != ""
	}
	// WHY is last: it is the long column, and nothing after it has to be pushed aside.
	header := "POD\tRUNTIMECLASS\tACTION\tRULE"
	if hasAudit {
		header += "\tAUDIT (would do)"
	}
	fmt.Fprintln(tw, header+"\tWHY")
	for _, r := range results {
		line := strings.Join([]string{r.Pod, dash(r.RuntimeClass), r.Action, dash(r.Rule)}, "\t")
		if hasAudit {
			a := "-"
			if r.audit.Action != "" {
				a = fmt.Sprintf("%s %s by %s", r.audit.Action, r.audit.RuntimeClass, r.audit.Rule)
			}
			line += "\t" + a
		}
		fmt.Fprintln(tw, line+"\t"+r.Reason)
	}
	return tw.Flush()
}
