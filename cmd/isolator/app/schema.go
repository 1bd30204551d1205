package app

import (
	"github.com/spf13/cobra"

	"github.com/isolator-dev/isolator/policy"
)

// newPolicySchemaCommand is `isolator policy schema`.
func newPolicySchemaCommand(s streams) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of a policy file, for editors",
		Long: `Print the JSON Schema (draft 2020-12) of a policy file: a RuntimePolicy document,
or a policy ConfigMap holding one under policy.yaml. Editors that speak the YAML
language server (VS Code's YAML extension, Neovim, JetBrains IDEs) complete and check
a policy against it; point a file at it with a first line

  # yaml-language-server: $schema=` + policy.SchemaURL + `

In a ConfigMap the policy is a string, so an editor checks only the ConfigMap's
label and key; keep the policy in its own file to have it checked as you type, and
build the ConfigMap from that file (docs/policy.md, Editor support).`,
		Example: `  # Save the schema of this isolator version beside your policies
  isolator policy schema > runtimepolicy.schema.json`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := s.out.Write(policy.Schema)
			return err
		},
	}
}
