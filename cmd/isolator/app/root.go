// Package app holds isolator's cobra commands. Each command takes its streams and a
// context from Run, so tests drive commands exactly as users do, without os.Args.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes shared by every command.
const (
	ExitOK      = 0
	ExitFailure = 1 // the command ran and found a problem (invalid policy, failed check)
	ExitUsage   = 2 // bad flags or arguments
)

// exitError carries an exit code up to Run without printing anything more.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError marks an error as a usage problem (exit 2).
func usageError(format string, args ...any) error {
	return &exitError{code: ExitUsage, err: fmt.Errorf(format, args...)}
}

// failure marks an error as a finding (exit 1) whose details were already printed.
func failure(err error) error { return &exitError{code: ExitFailure, err: err} }

// streams are the command's standard input and outputs.
type streams struct {
	in       io.Reader
	out, err io.Writer
}

// NewRootCommand builds the isolator command tree.
func NewRootCommand(s streams) *cobra.Command {
	root := &cobra.Command{
		Use:   "isolator",
		Short: "Run untrusted pods in Kata Containers micro-VMs, automatically",
		Long: `isolator decides, for every pod, whether it runs in a Kata Containers micro-VM
(runtimeClassName: kata-rc) or on the host kernel with runc (runc-rc), following
RuntimePolicy rules that platform teams keep in ConfigMaps.

It is one binary with several roles:
  webhook   the mutating admission webhook that applies the policy to every new pod
  node      the node bootstrapper that installs Kata and wires it into containerd
  policy    offline tools: validate policies, explain decisions, audit a cluster
  certs     inspect the webhook's serving certificates`,
		Example: `  # Check a policy before committing it
  isolator policy validate manifests/examples/policies.yaml

  # See what the policy would do to some pods
  isolator policy explain --policy manifests/examples/policies.yaml -f manifests/examples/pods.yaml

  # Run the webhook against a cluster
  isolator webhook --kubeconfig ~/.kube/config --namespace isolator-system --cert-dir /tmp/certs`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(s.in)
	root.SetOut(s.out)
	root.SetErr(s.err)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: ExitUsage, err: err}
	})
	root.AddCommand(
		newVersionCommand(s),
		newPolicyCommand(s),
		newWebhookCommand(s),
		newNodeCommand(s),
		newCertsCommand(s),
	)
	return root
}

// Run executes the isolator command line and returns the process exit code.
func Run(ctx context.Context, args []string, in io.Reader, out, errOut io.Writer) int {
	root := NewRootCommand(streams{in: in, out: out, err: errOut})
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.code == ExitUsage {
			fmt.Fprintf(errOut, "Error: %v\nRun '%s --help' for usage.\n", ee.err, commandPath(root, args))
		} else if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintf(errOut, "Error: %v\n", ee.err)
		}
		return ee.code
	}
	fmt.Fprintf(errOut, "Error: %v\n", err)
	if isCobraUsageError(err) {
		fmt.Fprintf(errOut, "Run '%s --help' for usage.\n", commandPath(root, args))
		return ExitUsage
	}
	return ExitFailure
}

// commandPath names the subcommand the user meant, for the usage hint.
func commandPath(root *cobra.Command, args []string) string {
	if cmd, _, err := root.Find(args); err == nil && cmd != nil {
		return cmd.CommandPath()
	}
	return root.CommandPath()
}

// isCobraUsageError recognises cobra's own argument and command errors.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand", "accepts ", "requires at least", "required flag", "invalid argument"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}
