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
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/isolator-dev/isolator/bootstrap/artifacts"
	"github.com/isolator-dev/isolator/bootstrap/containerd"
	"github.com/isolator-dev/isolator/bootstrap/cri"
	"github.com/isolator-dev/isolator/bootstrap/hostexec"
	"github.com/isolator-dev/isolator/bootstrap/internal/atomicfile"
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
	// Ready is true when the node was labelled isolator.dev/kata-runtime=true.
	Ready bool
}

// ErrHostUnsupported means the node cannot run Kata (no KVM, or kata-runtime check
// failed); it is reported and never labelled ready.
var ErrHostUnsupported = errors.New("this node cannot run Kata Containers")

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

func (b *Bootstrapper) install(ctx context.Context) (*Report, error) {
	h, err := b.Detect(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Host: h}
	log := b.log.WithValues("flavor", h.Flavor, "config", h.MainConfig)
	stateDir := b.hostPath(b.opts.StateDir)
	st, err := loadState(stateDir)
	if err != nil {
		return rep, err
	}

	// Opened, not only looked for: a device node that exists but can't be opened (no
	// permission, no kvm module behind it) runs no VM either.
	if f, err := os.OpenFile(b.opts.KVMDevice, os.O_RDWR, 0); err != nil {
		msg := fmt.Sprintf("%s can't be opened (%v), so Kata VMs cannot start here; the node stays unlabelled (enable virtualisation or nested KVM, or remove the %s=enabled label)", b.opts.KVMDevice, err, nodestate.LabelEnabled)
		b.setLabel(ctx, "false")
		b.event(ctx, corev1.EventTypeWarning, nodestate.ReasonNoKVM, msg)
		return rep, fmt.Errorf("%w: %s", ErrHostUnsupported, msg)
	} else {
		_ = f.Close()
	}
	if cur := b.currentLabel(ctx); cur != "true" {
		b.setLabel(ctx, "false")
		b.event(ctx, corev1.EventTypeNormal, nodestate.ReasonInstalling, "installing Kata Containers and the kata containerd handler")
	}
	b.step(StepLabelled)

	// Artifacts: stage next to the active version, verify, then swap /opt/kata.
	previous, err := b.art.Current()
	if err != nil {
		return rep, err
	}
	res, err := b.art.Stage(b.opts.Artifacts)
	if err != nil {
		return rep, b.fail(ctx, fmt.Errorf("install Kata artifacts: %w", err))
	}
	b.step(StepArtifactsStaged)
	if res.Activate {
		if err := b.art.Activate(res.Dir); err != nil {
			return rep, b.fail(ctx, fmt.Errorf("activate %s: %w", res.Dir, err))
		}
		rep.Changed = true
		log.Info("Kata artifacts activated", "dir", res.Dir, "previous", previous)
	}
	rep.Artifacts = res.Dir
	b.step(StepArtifactsActivated)
	ran, err := b.art.Check(ctx)
	if err == nil && !ran && !b.opts.SkipKataCheck {
		err = fmt.Errorf("the Kata release ships no bin/kata-runtime, so the host can't be checked; install a complete kata-static release, or pass --skip-kata-check")
	}
	if err != nil {
		// This run's artifacts go: the previous version comes back, or none.
		if res.Activate {
			b.restoreArtifacts(previous, log)
			rep.Artifacts, rep.Changed = previous, false
		}
		msg := fmt.Sprintf("kata-runtime check failed, the node stays unlabelled: %v", err)
		b.event(ctx, corev1.EventTypeWarning, nodestate.ReasonNoKVM, msg)
		return rep, fmt.Errorf("%w: %s", ErrHostUnsupported, msg)
	}
	if !ran {
		log.Info("no kata-runtime in the release; kata-runtime check skipped (--skip-kata-check)")
	}

	// containerd: plan, validate, write atomically.
	plan, err := b.plan(h)
	if err != nil {
		return rep, b.fail(ctx, fmt.Errorf("plan containerd config: %w", err))
	}
	rep.DropIn = plan.DropIn.Path
	current, err := readHostFile(b.opts.HostRoot, plan.DropIn.Path)
	if err != nil {
		return rep, err
	}
	changed := plan.MainChanged || !bytes.Equal(current.Data, plan.DropIn.Data)
	if changed && b.allowRestart != nil && !b.allowRestart() {
		return rep, ErrRestartDeferred
	}
	if changed {
		if err := b.validate(ctx, h, plan); err != nil {
			return rep, b.fail(ctx, err)
		}
	}

	// Record what this install adds before adding it.
	if st.Pending == nil && changed {
		st.Pending = &Pending{DropIn: current.Data, DropInExisted: current.Exists, ImportAdded: plan.ImportAdded, MainCreated: plan.MainCreated}
	}
	if plan.ImportAdded {
		st.ImportEntry = plan.ImportEntry
	}
	if plan.MainCreated {
		st.CreatedMain = true
	}
	if st.DropIn != "" && st.DropIn != plan.DropIn.Path {
		// An admin glob now covers another place: the old drop-in goes once the new one works.
		log.Info("drop-in moves", "from", st.DropIn, "to", plan.DropIn.Path)
	}
	oldDropIn := st.DropIn
	if _, err := os.Stat(b.hostPath(path.Dir(plan.DropIn.Path))); err != nil && st.DropIn != plan.DropIn.Path {
		st.CreatedDropInDir = true
	}
	st.MainConfig, st.Template, st.DropIn = h.MainConfig, h.Template, plan.DropIn.Path
	st.ArtifactsDir, st.ArtifactsDigest = res.Dir, res.Digest
	if err := saveState(stateDir, st); err != nil {
		return rep, fmt.Errorf("save state: %w", err)
	}
	b.step(StepStateSaved)

	if changed {
		rep.Changed = true
		b.setLabel(ctx, "false")
		if err := b.writeConfig(plan); err != nil {
			// Nothing was restarted: put back what was there, so the next containerd start
			// (for any reason) reads the admin's config.
			if rbErr := b.restoreConfig(h, st); rbErr != nil {
				err = errors.Join(err, fmt.Errorf("restore: %w", rbErr))
			}
			return rep, b.fail(ctx, err)
		}
	}

	endpoint := b.CRIEndpoint(h)
	needRestart := changed
	if !changed {
		// isolator's bytes are in place: restart only if the running containerd has not
		// read them (an earlier run stopped before its restart).
		// Give a containerd that is just starting (an earlier run's restart) time first.
		if s, err := cri.WaitReady(ctx, endpoint, min(b.opts.VerifyTimeout, 30*time.Second)); err == nil && s.Handlers[containerd.HandlerKata] {
			needRestart = false
		} else {
			needRestart = true
			log.Info("config unchanged but containerd does not serve the kata handler yet", "cri", endpoint, "err", err)
		}
	}
	if needRestart && !changed && b.allowRestart != nil && !b.allowRestart() {
		return rep, ErrRestartDeferred
	}
	if needRestart {
		down, err := b.restartAndWait(ctx, endpoint, true, "install")
		rep.Restarted, rep.Downtime = true, down
		if err != nil {
			if _, isNone := b.opts.Restarter.(restart.None); isNone {
				return rep, b.fail(ctx, fmt.Errorf("%w; with --restart=none, restart containerd yourself, then rerun", err))
			}
			return rep, b.rollback(ctx, h, st, endpoint, err)
		}
		log.Info("containerd restarted and serves the kata handler", "restart", b.opts.Restarter.Describe(), "downtimeMs", down.Milliseconds())
	}
	b.step(StepVerified)

	// Verified: forget the rollback data, drop versions nobody needs.
	if oldDropIn != "" && oldDropIn != plan.DropIn.Path {
		if err := atomicfile.Remove(b.hostPath(oldDropIn)); err != nil {
			log.Error(err, "remove the previous drop-in", "path", oldDropIn)
		}
	}
	st.Pending, st.Installed = nil, true
	if err := saveState(stateDir, st); err != nil {
		return rep, fmt.Errorf("save state: %w", err)
	}
	keep := []string{res.Dir}
	if previous != "" {
		keep = append(keep, previous)
	}
	if err := b.art.Prune(keep...); err != nil {
		log.Error(err, "prune old Kata versions")
	}

	rep.Ready = true
	if cur := b.currentLabel(ctx); cur != "true" {
		b.setLabel(ctx, "true")
		b.event(ctx, corev1.EventTypeNormal, nodestate.ReasonReady, fmt.Sprintf("containerd serves the kata handler (Kata %s); node labelled %s=true", res.ID, nodestate.LabelRuntime))
	}
	if b.opts.Node != nil {
		if removed, err := b.opts.Node.RemoveStartupTaint(ctx); err != nil {
			log.Error(err, "remove startup taint")
		} else if removed {
			log.Info("startup taint removed", "taint", nodestate.TaintNotReady)
		}
	}
	return rep, nil
}

// writeConfig writes the drop-in, then the main config: until the main config imports
// the drop-in (or an admin glob picks it up at the next restart), the drop-in is inert.
func (b *Bootstrapper) writeConfig(plan *containerd.Plan) error {
	if err := atomicfile.WriteFile(b.hostPath(plan.DropIn.Path), plan.DropIn.Data, 0o644); err != nil {
		return fmt.Errorf("write drop-in: %w", err)
	}
	b.step(StepDropInWritten)
	if plan.MainChanged {
		if err := atomicfile.WriteFile(b.hostPath(plan.Main.Path), plan.Main.Data, 0o644); err != nil {
			return fmt.Errorf("write main config: %w", err)
		}
	}
	b.step(StepMainWritten)
	return nil
}

// validate runs the host's containerd over the candidate config (config dump) and checks
// that it loads and that the result serves the kata handler.
func (b *Bootstrapper) validate(ctx context.Context, h *Host, plan *containerd.Plan) error {
	if h.Binary == "" {
		b.log.Info("no containerd binary found on the host; skipping validation of the candidate config")
		return nil
	}
	candDir := path.Join(b.opts.StateDir, "candidate")
	candDrop := path.Join(candDir, containerd.DropInName)
	if err := atomicfile.WriteFile(b.hostPath(candDrop), plan.DropIn.Data, 0o644); err != nil {
		return fmt.Errorf("write candidate drop-in: %w", err)
	}
	defer os.RemoveAll(b.hostPath(candDir))
	var candMain []byte
	var err error
	switch {
	case h.Template && h.Rendered != "":
		rendered, rerr := readHostFile(b.opts.HostRoot, h.Rendered)
		if rerr != nil || !rendered.Exists {
			b.log.Info("k3s/rke2 has not rendered its config yet; skipping validation", "rendered", h.Rendered)
			return nil
		}
		candMain, err = containerd.WithImport(rendered.Data, candDrop)
	case h.Template:
		return nil
	default:
		candMain, err = plan.CandidateMain(candDrop, false)
	}
	if err != nil {
		return fmt.Errorf("build candidate config: %w", err)
	}
	// Next to the main config so relative imports resolve alike; the name matches no
	// *.toml glob.
	candMainPath := path.Join(path.Dir(plan.Main.Path), ".isolator-candidate.toml.tmp")
	if err := atomicfile.WriteFile(b.hostPath(candMainPath), candMain, 0o600); err != nil {
		return fmt.Errorf("write candidate config: %w", err)
	}
	defer func() { _ = atomicfile.Remove(b.hostPath(candMainPath)) }()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := b.opts.Exec.Command(ctx, h.Binary, "--config", candMainPath, "config", "dump")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("containerd rejects the candidate config (%s --config %s config dump): %w: %s",
			h.Binary, candMainPath, err, lastLine(stderr.String()))
	}
	var dump map[string]any
	if err := toml.Unmarshal(out, &dump); err != nil {
		return fmt.Errorf("read containerd config dump: %w", err)
	}
	plugins, _ := dump["plugins"].(map[string]any)
	section, _ := plugins[plan.Schema.RuntimePlugin].(map[string]any)
	cd, _ := section["containerd"].(map[string]any)
	runtimes, _ := cd["runtimes"].(map[string]any)
	if _, ok := runtimes[containerd.HandlerKata]; !ok {
		return fmt.Errorf("containerd accepts the candidate config but its effective config has no %q handler under plugins.%q", containerd.HandlerKata, plan.Schema.RuntimePlugin)
	}
	b.log.V(1).Info("candidate config validated", "binary", h.Binary)
	return nil
}

func lastLine(s string) string {
	lines := bytes.Split(bytes.TrimSpace([]byte(s)), []byte("\n"))
	return string(lines[len(lines)-1])
}

// restartAndWait restarts containerd and waits until CRI is ready and the kata handler
// is served (wantKata) or not served. It returns the downtime.
func (b *Bootstrapper) restartAndWait(ctx context.Context, endpoint string, wantKata bool, reason string) (time.Duration, error) {
	start := time.Now()
	if err := b.opts.Restarter.Restart(ctx); err != nil {
		return time.Since(start), fmt.Errorf("restart containerd: %w", err)
	}
	b.step(StepRestarted)
	_, err := cri.WaitFor(ctx, endpoint, containerd.HandlerKata, wantKata, b.opts.VerifyTimeout)
	down := time.Since(start)
	b.metrics.restart(reason, down)
	return down, err
}

// rollback puts back the config from before this install, restarts containerd onto it
// and reports what happened. The node stays unlabelled.
func (b *Bootstrapper) rollback(ctx context.Context, h *Host, st *State, endpoint string, cause error) error {
	b.log.Error(cause, "containerd did not come back serving the kata handler; rolling back its config")
	err := b.restoreConfig(h, st)
	if err == nil {
		_, err = b.restartAndWait(ctx, endpoint, st.Pending != nil && st.Pending.DropInExisted, "rollback")
		if err != nil && errors.Is(err, cri.ErrTimeout) {
			// Ready without kata is what the restored config serves when the previous
			// drop-in did not work either; readiness is what matters here.
			if s, qerr := cri.Query(ctx, endpoint); qerr == nil && s.RuntimeReady {
				err = nil
			}
		}
	}
	msg := fmt.Sprintf("install failed (%v); restored the previous containerd config and restarted containerd", cause)
	if err != nil {
		msg = fmt.Sprintf("install failed (%v); rollback also failed: %v", cause, err)
	} else {
		st.Pending = nil
		st.Installed = false
		if serr := saveState(b.hostPath(b.opts.StateDir), st); serr != nil {
			b.log.Error(serr, "save state after rollback")
		}
	}
	b.log.Info("rolled back", "result", msg)
	b.setLabel(ctx, "false")
	b.event(ctx, corev1.EventTypeWarning, nodestate.ReasonRolledBack, msg)
	return fmt.Errorf("%s: %w", msg, cause)
}

// restoreConfig takes this install's config changes back: the previous drop-in (or none)
// and the main config without the entry or file this install added.
func (b *Bootstrapper) restoreConfig(h *Host, st *State) error {
	p := st.Pending
	if p == nil {
		return nil
	}
	if p.DropInExisted {
		if err := atomicfile.WriteFile(b.hostPath(st.DropIn), p.DropIn, 0o644); err != nil {
			return err
		}
	} else if err := atomicfile.Remove(b.hostPath(st.DropIn)); err != nil {
		return err
	}
	if !p.ImportAdded && !p.MainCreated {
		return nil
	}
	entry := ""
	if p.ImportAdded {
		entry = st.ImportEntry
	}
	if err := b.removeFromMain(h.MainConfig, h.Template, entry, p.MainCreated); err != nil {
		return err
	}
	if p.ImportAdded {
		st.ImportEntry = ""
	}
	if p.MainCreated {
		st.CreatedMain = false
	}
	return nil
}

// removeFromMain takes isolator's imports entry out of the main config, or deletes the
// config when isolator created it.
func (b *Bootstrapper) removeFromMain(mainPath string, template bool, entry string, created bool) error {
	main, err := readHostFile(b.opts.HostRoot, mainPath)
	if err != nil {
		return err
	}
	r, err := containerd.PlanRemoval(containerd.RemovalInput{Main: main, Template: template, ImportEntry: entry, Created: created})
	if err != nil {
		return err
	}
	switch {
	case r.Delete:
		return atomicfile.Remove(b.hostPath(mainPath))
	case r.Changed:
		return atomicfile.WriteFile(b.hostPath(mainPath), r.Data, 0o644)
	}
	return nil
}

// fail reports an install failure on the Node and returns err.
// restoreArtifacts undoes this run's activation after a failed check: the previous
// version is active again, or, on a first install, no version is left.
func (b *Bootstrapper) restoreArtifacts(previous string, log logr.Logger) {
	var err error
	if previous != "" {
		if err = b.art.Activate(previous); err == nil {
			err = b.art.Prune(previous)
		}
	} else {
		err = b.art.Remove()
	}
	if err != nil {
		log.Error(err, "removing the Kata artifacts of the failed install", "previous", previous)
	}
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
