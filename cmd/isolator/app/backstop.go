package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/isolator-dev/isolator/backstop"
)

func newPolicyBackstopCommand(s streams) *cobra.Command {
	var (
		policyFiles []string
		output      string
		namespace   string
		excluded    []string
	)
	cmd := &cobra.Command{
		Use:   "backstop --policy FILE... [-o yaml|json]",
		Short: "Print the fail-closed ValidatingAdmissionPolicy that backs the webhook up",
		Long: `Print the backstop of the merged policies: a ValidatingAdmissionPolicy and its
binding that the apiserver evaluates itself, so that a pod the policy sends to a
sandboxed runtime class is refused without it even while the webhook is down.

The webhook keeps these objects applied on its own (server-side apply, field
manager "isolator"). Use this command to review them, or to manage them with
GitOps when the webhook runs without the rights to write them. Prints nothing
when no Enforce rule and no defaultRuntimeClass picks a sandboxed class.

The namespaces isolator never touches (kube-system, kube-public,
kube-node-lease and isolator's own) are excluded, as in the webhook.`,
		Example: `  # Review the backstop of the example policies
  isolator policy backstop --policy manifests/examples/policies.yaml

  # Apply it yourself (GitOps, or a webhook without rights to write it)
  isolator policy backstop --policy team-a.yaml --policy team-b.yaml | kubectl apply --server-side -f -

  # As a JSON List
  isolator policy backstop --policy policy.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "yaml" && output != "json" {
				return usageError("-o must be yaml or json, not %q", output)
			}
			snap, err := compilePolicies(s, policyFiles, namespace)
			if err != nil {
				return err
			}
			opts := backstop.Options{Namespace: namespace}
			if cmd.Flags().Changed("exclude-namespace") {
				opts.ExcludedNamespaces = excluded
			}
			vaps, bindings, err := backstop.Generate(snap, opts)
			if err != nil {
				return failure(err)
			}
			if len(vaps) == 0 {
				fmt.Fprintln(s.err, "no Enforce rule and no defaultRuntimeClass picks a sandboxed class: there is nothing to back up")
				return nil
			}
			return backstop.Encode(s.out, output, vaps, bindings)
		},
	}
	cmd.Flags().StringArrayVar(&policyFiles, "policy", nil, "policy file (RuntimePolicy or ConfigMap YAML, - for stdin); repeat for several")
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")
	cmd.Flags().StringVar(&namespace, "namespace", backstop.DefaultNamespace, "isolator's namespace, never checked")
	cmd.Flags().StringSliceVar(&excluded, "exclude-namespace", backstop.DefaultExcludedNamespaces, "namespaces never checked, besides isolator's own")
	return cmd
}
