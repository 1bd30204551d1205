//go:build webhookonly

package app

import (
	"errors"

	"github.com/spf13/cobra"
)

// newNodeCommand stands in for the node role in the webhook image, which is built with
// -tags webhookonly: leaving out the bootstrapper's CRI, gRPC and D-Bus code keeps the
// webhook's binary and its resident memory small (docs/performance.md).
func newNodeCommand(streams) *cobra.Command {
	return &cobra.Command{
		Use:                "node",
		Short:              "Not in this build: the node bootstrapper ships in the isolator node image",
		DisableFlagParsing: true,
		RunE: func(*cobra.Command, []string) error {
			return errors.New("this isolator binary is the webhook image's (built with -tags webhookonly) and has no node role; run the node bootstrapper from the isolator node image")
		},
	}
}
