package app

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/isolator-dev/isolator/internal/version"
)

func newVersionCommand(s streams) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the isolator version",
		Example: `  isolator version`,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(s.out, version.String())
			return err
		},
	}
}
