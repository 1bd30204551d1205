//go:build !webhookonly

package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/isolator-dev/isolator/bootstrap"
	"github.com/isolator-dev/isolator/bootstrap/hostexec"
	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/bootstrap/restart"
)

type nodeFlags struct {
	hostRoot           string
	artifacts          string
	restartMode        string
	containerdConfig   string
	containerdBinary   string
	containerdPIDFile  string
	criEndpoint        string
	nodeName           string
	kubeconfig         string
	namespace          string
	daemonSet          string
	stateDir           string
	kvmDevice          string
	skipKataCheck      bool
	skipSandboxCheck   bool
	sandboxTimeout     time.Duration
	verifyTimeout      time.Duration
	interval           time.Duration
	minRestartInterval time.Duration
	shutdownTimeout    time.Duration
	metricsAddr        string
	healthAddr         string
	log                logOptions
	output             string
}

func newNodeCommand(s streams) *cobra.Command {
	f := &nodeFlags{}
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Install Kata Containers on a node and wire it into containerd",
		Long: `The node bootstrapper. It installs the Kata static release under /opt/kata, adds
isolator's drop-in with the kata handler to containerd's config, restarts containerd
when (and only when) isolator's bytes changed, verifies over CRI that containerd
serves the kata handler, starts a throwaway pod sandbox with it (a Kata VM boots),
and only then labels the node isolator.dev/kata-runtime=true, which the kata-rc
RuntimeClass requires. A node where the sandbox does not start stays unlabelled, with
a KataSandboxFailed Event that carries containerd's error.

The admin's containerd config is never re-encoded: isolator adds one imports entry
(or none, when a glob already covers its drop-in), and uninstall takes exactly that
entry out again. See docs/node.md for every file it writes.

Paths such as --containerd-config and --state-dir are host paths; isolator reads
and writes them under --host-root. The default --host-root is "/" for running on the
node itself; the DaemonSet mounts the node at /host and passes --host-root /host.`,
		Example: `  # On a node, as root: install from a Kata release tarball, restart containerd via systemd
  isolator node install --artifacts ./kata-static-3.2.0-amd64.tar.xz

  # What the DaemonSet runs: install, repair drift, uninstall when the node is deselected
  isolator node run --host-root /host --artifacts /opt/isolator/kata --node-name "$NODE_NAME"

  # A containerd under another supervisor: SIGTERM it and let the supervisor restart it
  isolator node install --artifacts /opt/isolator/kata --restart signal

  # Inspect: versions, drift, whether containerd serves the kata handler
  isolator node status -o json

  # Take everything back; the containerd config is byte-identical to before
  isolator node uninstall --restart systemd`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.hostRoot, "host-root", "/", `where the node's filesystem is mounted ("/" on the node itself; the DaemonSet uses /host)`)
	pf.StringVar(&f.artifacts, "artifacts", "", "Kata static release: kata-static-<version>-<arch>.tar.xz, or a directory holding ./opt/kata/{bin,libexec,share}")
	pf.StringVar(&f.restartMode, "restart", string(restart.ModeSystemd), "how to restart containerd: systemd (D-Bus), signal (SIGTERM; another supervisor restarts it) or none")
	pf.StringVar(&f.containerdConfig, "containerd-config", "", "host path of containerd's config or k3s/rke2 template (default: detected: /etc/containerd/config.toml, or /var/lib/rancher/{k3s,rke2}/agent/etc/containerd/config[-v3].toml.tmpl)")
	pf.StringVar(&f.containerdBinary, "containerd-binary", "", "host path of the containerd binary used to validate the candidate config (default: detected)")
	pf.StringVar(&f.containerdPIDFile, "containerd-pid-file", "", "file holding containerd's pid, for --restart signal (default: found in /proc by its socket)")
	pf.StringVar(&f.criEndpoint, "cri-endpoint", "", "CRI endpoint to verify containerd on (default: unix://<host-root><containerd socket>)")
	pf.StringVar(&f.nodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name, for labels, taint and Events (default $NODE_NAME, set from the downward API); empty runs without a cluster")
	pf.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file; empty uses $KUBECONFIG or the in-cluster service account")
	pf.StringVar(&f.namespace, "namespace", envOr("POD_NAMESPACE", "isolator-system"), "namespace of the isolator-node DaemonSet ($POD_NAMESPACE, set from the downward API, overrides the default)")
	pf.StringVar(&f.daemonSet, "daemonset", "isolator-node", "name of the DaemonSet that runs this bootstrapper, for the rollout-or-removal decision on SIGTERM")
	pf.StringVar(&f.stateDir, "state-dir", bootstrap.DefaultStateDir, "host path of isolator's state directory")
	pf.StringVar(&f.kvmDevice, "kvm-device", "/dev/kvm", "KVM device that must open before Kata is installed (a path as isolator sees it)")
	pf.BoolVar(&f.skipKataCheck, "skip-kata-check", false, "install a Kata release that ships no kata-runtime without running kata-runtime check; such a release is refused otherwise")
	pf.BoolVar(&f.skipSandboxCheck, "skip-sandbox-check", false, "label the node once containerd serves the kata handler, without first starting a throwaway pod sandbox with it (the check needs the node's pod network and pause image, as any pod does)")
	pf.DurationVar(&f.sandboxTimeout, "sandbox-timeout", 2*time.Minute, "how long the throwaway kata pod sandbox may take to start (a VM boot, and pulling the pause image where it is missing)")
	pf.DurationVar(&f.verifyTimeout, "verify-timeout", 2*time.Minute, "how long to wait for containerd to serve the kata handler after a restart")
	f.log.addFlags(pf)

	cmd.AddCommand(newNodeInstallCommand(s, f), newNodeUninstallCommand(s, f), newNodeStatusCommand(s, f), newNodeRunCommand(s, f))
	return cmd
}

// newNodeInstallCommand is `isolator node install`.
func newNodeInstallCommand(s streams, f *nodeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install Kata, add the kata handler to containerd, verify and label the node",
		Args:  cobra.NoArgs,
		Example: `  isolator node install --artifacts ./kata-static-3.2.0-amd64.tar.xz
  isolator node install --host-root /host --artifacts /opt/isolator/kata --restart signal --node-name n1`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := f.bootstrapper(s, true)
			if err != nil {
				return err
			}
			start := time.Now()
			rep, err := b.Install(cmd.Context())
			if err != nil {
				return failure(err)
			}
			sandbox := "not needed (labelled, nothing changed)"
			switch {
			case f.skipSandboxCheck:
				sandbox = "skipped"
			case rep.SandboxStarted > 0:
				sandbox = fmt.Sprintf("started and removed in %dms", rep.SandboxStarted.Milliseconds())
			}
			fmt.Fprintf(s.out, "installed: artifacts %s, drop-in %s, changed %v, containerd restarted %v (downtime %dms), kata sandbox %s, %s\n",
				rep.Artifacts, rep.DropIn, rep.Changed, rep.Restarted, rep.Downtime.Milliseconds(), sandbox, durationNote(time.Since(start)))
			return nil
		},
	}
	return cmd
}

// newNodeUninstallCommand is `isolator node uninstall`.
func newNodeUninstallCommand(s streams, f *nodeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "uninstall",
		Short:   "Remove the label, isolator's containerd config and the Kata artifacts",
		Args:    cobra.NoArgs,
		Example: `  isolator node uninstall --restart systemd`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := f.bootstrapper(s, false)
			if err != nil {
				return err
			}
			start := time.Now()
			rep, err := b.Uninstall(cmd.Context())
			if err != nil {
				return failure(err)
			}
			fmt.Fprintf(s.out, "uninstalled: changed %v, containerd restarted %v (downtime %dms), %s\n",
				rep.Changed, rep.Restarted, rep.Downtime.Milliseconds(), durationNote(time.Since(start)))
			return nil
		},
	}
	return cmd
}

// newNodeStatusCommand is `isolator node status`.
func newNodeStatusCommand(s streams, f *nodeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show isolator's install on this node, drift, and whether containerd serves kata",
		Args:  cobra.NoArgs,
		Example: `  isolator node status
  isolator node status -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.output != "text" && f.output != "json" {
				return usageError("-o %q: must be text or json", f.output)
			}
			b, err := f.bootstrapper(s, false)
			if err != nil {
				return err
			}
			st, err := b.Status(cmd.Context())
			if err != nil {
				return failure(err)
			}
			if f.output == "json" {
				enc := json.NewEncoder(s.out)
				return enc.Encode(st)
			}
			printStatus(s.out, st)
			if !st.Installed || len(st.Drift) > 0 || !st.Serving {
				return failure(errors.New("not ready"))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&f.output, "output", "o", "text", "text or json")
	return cmd
}

// newNodeRunCommand is `isolator node run`, what the DaemonSet runs.
func newNodeRunCommand(s streams, f *nodeFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Install, then repair drift until SIGTERM; uninstall only when the node is deselected",
		Long: `Install, then re-check every --interval and repair drift (a deleted drop-in, damaged
artifacts, a removed imports entry), restarting containerd at most once per
--min-restart-interval. On SIGTERM it uninstalls only when the DaemonSet no longer
selects this node (label isolator.dev/kata is not "enabled", the DaemonSet is gone or
being deleted, or its nodeSelector no longer matches); otherwise the SIGTERM is a
rollout and everything stays, so running Kata pods are not disturbed.`,
		Args:    cobra.NoArgs,
		Example: `  isolator node run --host-root /host --artifacts /opt/isolator/kata --node-name "$NODE_NAME"`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			b, err := f.bootstrapper(s, true)
			if err != nil {
				return err
			}
			stop, err := serveNodeEndpoints(cmd.Context(), b, f.metricsAddr, f.healthAddr)
			if err != nil {
				return failure(err)
			}
			defer stop()
			ro := bootstrap.RunOptions{Interval: f.interval, MinRestartInterval: f.minRestartInterval, ShutdownTimeout: f.shutdownTimeout}
			if err := b.Run(cmd.Context(), ro); err != nil {
				return failure(err)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&f.interval, "interval", time.Minute, "how often to check for drift")
	cmd.Flags().DurationVar(&f.minRestartInterval, "min-restart-interval", 5*time.Minute, "least time between two containerd restarts for repairs")
	cmd.Flags().StringVar(&f.metricsAddr, "metrics-bind-address", ":8080", "address to serve Prometheus metrics on (/metrics); 0 turns them off")
	cmd.Flags().StringVar(&f.healthAddr, "health-probe-bind-address", ":8081", "address to serve the probes on: /healthz fails when a reconcile pass is stuck, /readyz until Kata is installed and containerd serves the kata handler; 0 turns them off")
	cmd.Flags().DurationVar(&f.shutdownTimeout, "shutdown-timeout", 50*time.Second, "bound on the uninstall after SIGTERM when the DaemonSet no longer selects the node (keep it below terminationGracePeriodSeconds)")
	return cmd
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func durationNote(d time.Duration) string {
	return fmt.Sprintf("took %dms", d.Milliseconds())
}

func printStatus(w io.Writer, st *bootstrap.Status) {
	fmt.Fprintf(w, "containerd:   %s, config %s\n", st.Host.Flavor, st.Host.MainConfig)
	if st.Host.Binary != "" {
		fmt.Fprintf(w, "binary:       %s %s\n", st.Host.Binary, st.Host.Version)
	}
	fmt.Fprintf(w, "kvm:          %v\n", st.KVM)
	fmt.Fprintf(w, "installed:    %v\n", st.Installed)
	if st.Installed {
		fmt.Fprintf(w, "artifacts:    %s\n", st.ArtifactsDir)
		fmt.Fprintf(w, "drop-in:      %s\n", st.DropIn)
	}
	if st.CRIError != "" {
		fmt.Fprintf(w, "serving kata: false (%s)\n", st.CRIError)
	} else {
		fmt.Fprintf(w, "serving kata: %v\n", st.Serving)
	}
	for _, d := range st.Drift {
		fmt.Fprintf(w, "drift:        %s\n", d)
	}
}

// bootstrapper builds a Bootstrapper from the flags.
func (f *nodeFlags) bootstrapper(s streams, needArtifacts bool) (*bootstrap.Bootstrapper, error) {
	if needArtifacts && f.artifacts == "" {
		return nil, usageError("--artifacts is required: the Kata static tarball or directory to install")
	}
	if !filepath.IsAbs(f.hostRoot) {
		return nil, usageError("--host-root %q: must be an absolute path", f.hostRoot)
	}
	mode, err := restart.ParseMode(f.restartMode)
	if err != nil {
		return nil, usageError("%v", err)
	}
	log, err := f.log.setup(s.err)
	if err != nil {
		return nil, err
	}
	log = log.WithName("node")
	var r restart.Restarter = restart.None{}
	if mode == restart.ModeSystemd {
		r = restart.Systemd{HostRoot: f.hostRoot}
	}
	opts := bootstrap.Options{
		HostRoot: f.hostRoot, Artifacts: f.artifacts,
		ContainerdConfig: f.containerdConfig, ContainerdBinary: f.containerdBinary,
		CRIEndpoint: f.criEndpoint, Restarter: r, StateDir: f.stateDir, KVMDevice: f.kvmDevice, SkipKataCheck: f.skipKataCheck,
		SkipSandboxCheck: f.skipSandboxCheck, SandboxTimeout: f.sandboxTimeout,
		VerifyTimeout: f.verifyTimeout, Exec: hostexec.Runner{Root: f.hostRoot}, Log: log,
		AtStep: crashHook(),
	}
	if f.nodeName != "" {
		client, err := kubeClient(f.kubeconfig)
		if err != nil {
			return nil, usageError("%v", err)
		}
		opts.Node = &nodestate.Node{Client: client, Name: f.nodeName, Namespace: f.namespace, DaemonSet: f.daemonSet}
	}
	b := bootstrap.New(opts)
	if mode == restart.ModeSignal {
		// The signal restarter finds containerd by its socket, known once the host is detected.
		b.SetRestarter(func(h *bootstrap.Host) restart.Restarter {
			addr := h.Socket
			if f.criEndpoint != "" {
				addr = strings.TrimPrefix(f.criEndpoint, "unix://")
				addr = strings.TrimPrefix(addr, filepath.Clean(f.hostRoot))
				if !strings.HasPrefix(addr, "/") {
					addr = "/" + addr
				}
			}
			pidFile := ""
			if f.containerdPIDFile != "" {
				pidFile = filepath.Join(f.hostRoot, f.containerdPIDFile)
			}
			return restart.Signal{Address: addr, PIDFile: pidFile}
		})
	}
	return b, nil
}

func kubeClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("%w (or leave --node-name empty to run without a cluster)", err)
	}
	cfg.UserAgent = "isolator-node"
	return kubernetes.NewForConfig(cfg)
}

// serveNodeEndpoints serves the bootstrapper's metrics (and Go/process metrics) on
// metricsAddr and its probes on healthAddr ("0" or "" turns either off) until stop is
// called.
func serveNodeEndpoints(ctx context.Context, b *bootstrap.Bootstrapper, metricsAddr, healthAddr string) (stop func(), err error) {
	var servers []*http.Server
	stop = func() {
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		for _, srv := range servers {
			_ = srv.Shutdown(shutdownCtx)
		}
	}
	serve := func(flag, addr string, mux *http.ServeMux) error {
		if addr == "0" || addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("--%s %s: %w", flag, addr, err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, srv)
		go func() { _ = srv.Serve(ln) }()
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	b.SetMetrics(bootstrap.NewMetrics(reg))
	metrics := http.NewServeMux()
	metrics.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	health := bootstrap.NewHealth()
	b.SetHealth(health)
	probes := http.NewServeMux()
	probes.HandleFunc("/healthz", probe(health.Live))
	probes.HandleFunc("/readyz", probe(health.Ready))
	if err := serve("metrics-bind-address", metricsAddr, metrics); err != nil {
		return nil, err
	}
	if err := serve("health-probe-bind-address", healthAddr, probes); err != nil {
		stop()
		return nil, err
	}
	return stop, nil
}

// probe answers 200 "ok" while check passes, else 503 with the reason.
func probe(check func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		if err := check(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}
}
