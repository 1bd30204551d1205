// Package bootstrap is isolator's node bootstrapper: it installs the Kata Containers
// artifacts, wires the kata handler into containerd, restarts containerd safely,
// verifies over CRI that the handler is served, and only then labels the node ready for
// kata-rc. Uninstall takes all of it back, leaving the admin's config byte-identical.
//
// The decisions live in pure packages (containerd plans the bytes, artifacts stages and
// verifies files); this package does the I/O around them in a fixed order, keeping a
// small state file so that a crash at any step converges on the next run.
package bootstrap

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"

	"github.com/isolator-dev/isolator/bootstrap/artifacts"
	"github.com/isolator-dev/isolator/bootstrap/containerd"
	"github.com/isolator-dev/isolator/bootstrap/hostexec"
	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/bootstrap/restart"
)

// Options configure a Bootstrapper.
type Options struct {
	// HostRoot is where the node's filesystem is mounted ("/host" in the DaemonSet).
	HostRoot string
	// Artifacts is the Kata static tarball or directory to install.
	Artifacts string
	// ContainerdConfig and ContainerdBinary override detection (host paths).
	ContainerdConfig string
	ContainerdBinary string
	// CRIEndpoint overrides the endpoint derived from the detected socket.
	CRIEndpoint string
	// Restarter restarts containerd; RestartNone means the admin does.
	Restarter restart.Restarter
	// StateDir is a host path (default /var/lib/isolator).
	StateDir string
	// KVMDevice is opened before anything is installed (default /dev/kvm).
	KVMDevice string
	// SkipKataCheck installs a release that ships no kata-runtime without running
	// kata-runtime check. Without it, such a release is refused: the check is one of
	// the proofs the node can run Kata.
	SkipKataCheck bool
	// SkipSandboxCheck labels the node once containerd serves the kata handler, without
	// first starting a throwaway pod sandbox with it. Without it, the node is labelled
	// only after such a sandbox has started (cri.TrySandbox).
	SkipSandboxCheck bool
	// SandboxTimeout bounds that sandbox's start (default 2 minutes: a VM boot, and the
	// pause image's pull on a node that has none yet).
	SandboxTimeout time.Duration
	// Node updates the Node object; nil runs without a cluster.
	Node *nodestate.Node
	// VerifyTimeout bounds the wait for containerd to serve the kata handler.
	VerifyTimeout time.Duration
	// Exec runs host binaries (containerd, kata-runtime).
	Exec hostexec.Runner
	// AtStep is called at each named step boundary; tests use it to crash the process
	// there (see StepNames).
	AtStep func(step string)
	Log    logr.Logger
}

// Steps of install and uninstall, in order, as passed to Options.AtStep.
const (
	StepLabelled           = "labelled"
	StepArtifactsStaged    = "artifacts-staged"
	StepArtifactsActivated = "artifacts-activated"
	StepStateSaved         = "state-saved"
	StepDropInWritten      = "dropin-written"
	StepMainWritten        = "main-written"
	StepRestarted          = "restarted"
	StepVerified           = "verified"
	StepUnlabelled         = "unlabelled"
	StepConfigRemoved      = "config-removed"
	StepArtifactsRemoved   = "artifacts-removed"
)

// StepNames lists the install steps in order.
var StepNames = []string{StepLabelled, StepArtifactsStaged, StepArtifactsActivated, StepStateSaved, StepDropInWritten, StepMainWritten, StepRestarted, StepVerified}

// Report says what a run did.
type Report struct {
	Host *Host
	// Changed is true when isolator's bytes on the node changed.
	Changed bool
	// Restarted is true when containerd was restarted; Downtime is from the restart
	// request until CRI served again.
	Restarted bool
	Downtime  time.Duration
	// Artifacts is the active Kata version directory.
	Artifacts string
	DropIn    string
	// SandboxStarted is how long the throwaway kata pod sandbox took to start, stop and
	// go; zero when no sandbox was tried.
	SandboxStarted time.Duration
	// Ready is true when the node was labelled isolator.dev/kata-runtime=true.
	Ready bool
}

// Bootstrapper installs and uninstalls isolator's Kata setup on one node.
type Bootstrapper struct {
	opts Options
	art  artifacts.Installer
	log  logr.Logger
	// restarterFor, when set, builds the restarter from the detected host.
	restarterFor func(*Host) restart.Restarter
	// allowRestart, when set, rate-limits restarts (run mode).
	allowRestart func() bool
	metrics      *Metrics
	health       *Health
	// lastEvent deduplicates Events, so a node that keeps failing the same way in run
	// mode does not flood the API.
	lastEvent map[string]string
}

// New returns a Bootstrapper with defaults filled in.
func New(opts Options) *Bootstrapper {
	if opts.HostRoot == "" {
		opts.HostRoot = "/"
	}
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.KVMDevice == "" {
		opts.KVMDevice = "/dev/kvm"
	}
	if opts.VerifyTimeout == 0 {
		opts.VerifyTimeout = 2 * time.Minute
	}
	if opts.SandboxTimeout == 0 {
		opts.SandboxTimeout = 2 * time.Minute
	}
	if opts.Restarter == nil {
		opts.Restarter = restart.None{}
	}
	if opts.Exec.Root == "" {
		opts.Exec.Root = opts.HostRoot
	}
	return &Bootstrapper{
		opts: opts,
		art:  artifacts.Installer{HostRoot: opts.HostRoot, Exec: opts.Exec},
		log:  opts.Log,
	}
}

func (b *Bootstrapper) hostPath(p string) string { return filepath.Join(b.opts.HostRoot, p) }

func (b *Bootstrapper) step(name string) {
	b.log.V(1).Info("step done", "step", name)
	if b.opts.AtStep != nil {
		b.opts.AtStep(name)
	}
}

// SetMetrics makes the bootstrapper record its metrics in m.
func (b *Bootstrapper) SetMetrics(m *Metrics) { b.metrics = m }

// SetRestarter makes the restarter depend on the detected host (its socket, its unit).
func (b *Bootstrapper) SetRestarter(f func(*Host) restart.Restarter) { b.restarterFor = f }

// Detect finds the node's containerd.
func (b *Bootstrapper) Detect(ctx context.Context) (*Host, error) {
	h, err := DetectHost(ctx, b.opts.HostRoot, b.opts.Exec, b.opts.ContainerdConfig, b.opts.ContainerdBinary)
	if err != nil {
		return nil, err
	}
	if b.restarterFor != nil {
		b.opts.Restarter = b.restarterFor(h)
	}
	return h, nil
}

// CRIEndpoint is the endpoint used to verify containerd.
func (b *Bootstrapper) CRIEndpoint(h *Host) string {
	if b.opts.CRIEndpoint != "" {
		return b.opts.CRIEndpoint
	}
	return "unix://" + b.hostPath(h.Socket)
}

// plan reads the node's config files and plans isolator's changes.
func (b *Bootstrapper) plan(h *Host) (*containerd.Plan, error) {
	main, err := readHostFile(b.opts.HostRoot, h.MainConfig)
	if err != nil {
		return nil, err
	}
	in := containerd.Input{
		Main: main, Template: h.Template, FS: os.DirFS(b.opts.HostRoot),
		ContainerdVersion: h.Version, Kata: containerd.DefaultKata,
	}
	if h.Rendered != "" {
		if in.Rendered, err = readHostFile(b.opts.HostRoot, h.Rendered); err != nil {
			return nil, err
		}
	}
	return containerd.PlanInstall(in)
}

// Install installs (or repairs) everything and labels the node ready once containerd
// serves the kata handler. Running it again on an installed node changes nothing and
// restarts nothing.
func (b *Bootstrapper) Install(ctx context.Context) (*Report, error) {
	rep, err := b.install(ctx)
	b.metrics.install(err)
	return rep, err
}

func (b *Bootstrapper) fail(ctx context.Context, err error) error {
	b.log.Error(err, "install failed; the node stays unlabelled")
	b.event(ctx, corev1.EventTypeWarning, nodestate.ReasonFailed, err.Error())
	return err
}

func (b *Bootstrapper) setLabel(ctx context.Context, value string) {
	if b.opts.Node == nil {
		return
	}
	if err := b.opts.Node.SetRuntimeLabel(ctx, value); err != nil {
		b.log.Error(err, "set node label", "label", nodestate.LabelRuntime, "value", value)
	}
}

func (b *Bootstrapper) currentLabel(ctx context.Context) string {
	if b.opts.Node == nil {
		return ""
	}
	v, _, err := b.opts.Node.RuntimeLabel(ctx)
	if err != nil {
		b.log.Error(err, "read node label")
	}
	return v
}

func (b *Bootstrapper) event(ctx context.Context, eventType, reason, message string) {
	if b.opts.Node == nil || b.lastEvent[reason] == message {
		return
	}
	if b.lastEvent == nil {
		b.lastEvent = map[string]string{}
	}
	b.lastEvent[reason] = message
	if err := b.opts.Node.Event(ctx, eventType, reason, message); err != nil {
		b.log.Error(err, "record node event", "reason", reason)
	}
}
