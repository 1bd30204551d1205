package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"time"

	"github.com/go-logr/logr"
	"github.com/pelletier/go-toml/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/isolator-dev/isolator/bootstrap/artifacts"
	"github.com/isolator-dev/isolator/bootstrap/containerd"
	"github.com/isolator-dev/isolator/bootstrap/cri"
	"github.com/isolator-dev/isolator/bootstrap/internal/atomicfile"
	"github.com/isolator-dev/isolator/bootstrap/nodestate"
	"github.com/isolator-dev/isolator/bootstrap/restart"
)

// install is one run of Install: what its steps share.
type install struct {
	*Bootstrapper
	rep      *Report
	log      logr.Logger
	h        *Host
	st       *State
	stateDir string
	// previous is the Kata version active before this run; res what this run staged.
	previous string
	res      *artifacts.Result
	plan     *containerd.Plan
	current  containerd.File // the drop-in as it was
	changed  bool            // isolator's bytes in the config differ from the plan's
	// oldDropIn is where an earlier install put its drop-in, when an admin glob has
	// moved it since.
	oldDropIn string
	endpoint  string
}

// install runs the install steps in order. Each step does its part or stops the run
// with an error, undoing its own changes (the artifacts after a failed check, the
// config after a failed write, the config and containerd after a failed restart).
func (b *Bootstrapper) install(ctx context.Context) (*Report, error) {
	in, err := b.start(ctx)
	if err != nil || in.st == nil {
		return in.report(), err
	}
	for _, step := range []func(context.Context) error{
		in.preflight,       // StepLabelled: KVM, the label pending
		in.stageArtifacts,  // StepArtifactsStaged, StepArtifactsActivated
		in.checkKata,       // kata-runtime check; this run's artifacts go on failure
		in.planConfig,      // the drop-in, validated by the host's containerd
		in.saveState,       // StepStateSaved: what to undo, before doing it
		in.writeConfig,     // StepDropInWritten, StepMainWritten; restored on failure
		in.restartIfNeeded, // StepRestarted, StepVerified; rolled back on failure
		in.trySandbox,      // a throwaway kata pod sandbox starts; else no label
		in.finish,          // forget the rollback data, prune, label ready, untaint
	} {
		if err := step(ctx); err != nil {
			return in.rep, err
		}
	}
	return in.rep, nil
}

// start detects the host and loads isolator's state.
func (b *Bootstrapper) start(ctx context.Context) (*install, error) {
	in := &install{Bootstrapper: b}
	h, err := b.Detect(ctx)
	if err != nil {
		return in, err
	}
	in.h, in.rep = h, &Report{Host: h}
	in.log = b.log.WithValues("flavor", h.Flavor, "config", h.MainConfig)
	in.stateDir = b.hostPath(b.opts.StateDir)
	in.st, err = loadState(in.stateDir)
	return in, err
}

func (in *install) report() *Report { return in.rep }

// preflight opens the KVM device (not only looks for it: a device node that exists but
// can't be opened runs no VM either) and marks the install pending on the Node.
func (in *install) preflight(ctx context.Context) error {
	f, err := os.OpenFile(in.opts.KVMDevice, os.O_RDWR, 0)
	if err != nil {
		msg := fmt.Sprintf("%s can't be opened (%v), so Kata VMs cannot start here; the node stays unlabelled (enable virtualisation or nested KVM, or remove the %s=enabled label)", in.opts.KVMDevice, err, nodestate.LabelEnabled)
		in.setLabel(ctx, "false")
		in.event(ctx, corev1.EventTypeWarning, nodestate.ReasonNoKVM, msg)
		return fmt.Errorf("%w: %s", ErrHostUnsupported, msg)
	}
	_ = f.Close()
	if cur := in.currentLabel(ctx); cur != "true" {
		in.setLabel(ctx, "false")
		in.event(ctx, corev1.EventTypeNormal, nodestate.ReasonInstalling, "installing Kata Containers and the kata containerd handler")
	}
	in.step(StepLabelled)
	return nil
}

// stageArtifacts stages the release next to the active version, verifies it, then
// swaps /opt/kata to it.
func (in *install) stageArtifacts(ctx context.Context) error {
	var err error
	if in.previous, err = in.art.Current(); err != nil {
		return err
	}
	if in.res, err = in.art.Stage(in.opts.Artifacts); err != nil {
		return in.fail(ctx, fmt.Errorf("install Kata artifacts: %w", err))
	}
	in.step(StepArtifactsStaged)
	if in.res.Activate {
		if err := in.art.Activate(in.res.Dir); err != nil {
			return in.fail(ctx, fmt.Errorf("activate %s: %w", in.res.Dir, err))
		}
		in.rep.Changed = true
		in.log.Info("Kata artifacts activated", "dir", in.res.Dir, "previous", in.previous)
	}
	in.rep.Artifacts = in.res.Dir
	in.step(StepArtifactsActivated)
	return nil
}

// checkKata runs kata-runtime check. When it fails, or the release ships no
// kata-runtime (without --skip-kata-check), this run's artifacts go: the previous
// version comes back, or none.
func (in *install) checkKata(ctx context.Context) error {
	ran, err := in.art.Check(ctx)
	if err == nil && !ran && !in.opts.SkipKataCheck {
		err = fmt.Errorf("the Kata release ships no bin/kata-runtime, so the host can't be checked; install a complete kata-static release, or pass --skip-kata-check")
	}
	if err != nil {
		if in.res.Activate {
			in.restoreArtifacts(in.previous, in.log)
			in.rep.Artifacts, in.rep.Changed = in.previous, false
		}
		msg := fmt.Sprintf("kata-runtime check failed, the node stays unlabelled: %v", err)
		in.event(ctx, corev1.EventTypeWarning, nodestate.ReasonNoKVM, msg)
		return fmt.Errorf("%w: %s", ErrHostUnsupported, msg)
	}
	if !ran {
		in.log.Info("no kata-runtime in the release; kata-runtime check skipped (--skip-kata-check)")
	}
	return nil
}

// planConfig plans containerd's config and, when isolator's bytes change, validates the
// candidate with the host's containerd.
func (in *install) planConfig(ctx context.Context) error {
	var err error
	if in.plan, err = in.Bootstrapper.plan(in.h); err != nil {
		return in.fail(ctx, fmt.Errorf("plan containerd config: %w", err))
	}
	in.rep.DropIn = in.plan.DropIn.Path
	if in.current, err = readHostFile(in.opts.HostRoot, in.plan.DropIn.Path); err != nil {
		return err
	}
	in.changed = in.plan.MainChanged || !bytes.Equal(in.current.Data, in.plan.DropIn.Data)
	if in.changed && in.allowRestart != nil && !in.allowRestart() {
		return ErrRestartDeferred
	}
	if in.changed {
		if err := in.validate(ctx, in.h, in.plan); err != nil {
			return in.fail(ctx, err)
		}
	}
	return nil
}

// saveState records what this install adds before adding it, so that a crash at any
// later point can be undone or completed.
func (in *install) saveState(context.Context) error {
	st, plan := in.st, in.plan
	if st.Pending == nil && in.changed {
		st.Pending = &Pending{DropIn: in.current.Data, DropInExisted: in.current.Exists, ImportAdded: plan.ImportAdded, MainCreated: plan.MainCreated}
	}
	if plan.ImportAdded {
		st.ImportEntry = plan.ImportEntry
	}
	if plan.MainCreated {
		st.CreatedMain = true
	}
	if st.DropIn != "" && st.DropIn != plan.DropIn.Path {
		// An admin glob now covers another place: the old drop-in goes once the new one works.
		in.log.Info("drop-in moves", "from", st.DropIn, "to", plan.DropIn.Path)
	}
	in.oldDropIn = st.DropIn
	if _, err := os.Stat(in.hostPath(path.Dir(plan.DropIn.Path))); err != nil && st.DropIn != plan.DropIn.Path {
		st.CreatedDropInDir = true
	}
	st.MainConfig, st.Template, st.DropIn = in.h.MainConfig, in.h.Template, plan.DropIn.Path
	st.ArtifactsDir, st.ArtifactsDigest = in.res.Dir, in.res.Digest
	if err := saveState(in.stateDir, st); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	in.step(StepStateSaved)
	return nil
}

// writeConfig writes the planned config when it changed. Nothing is restarted yet, so
// a failed write puts back what was there, and the next containerd start (for any
// reason) reads the admin's config.
func (in *install) writeConfig(ctx context.Context) error {
	if !in.changed {
		return nil
	}
	in.rep.Changed = true
	in.setLabel(ctx, "false")
	if err := in.Bootstrapper.writeConfig(in.plan); err != nil {
		if rbErr := in.restoreConfig(in.h, in.st); rbErr != nil {
			err = errors.Join(err, fmt.Errorf("restore: %w", rbErr))
		}
		return in.fail(ctx, err)
	}
	return nil
}

// restartIfNeeded restarts containerd when the config changed, or when the running
// containerd has not read isolator's bytes yet (an earlier run stopped before its
// restart), and waits until CRI serves the kata handler. When it doesn't, the config
// and containerd are rolled back.
func (in *install) restartIfNeeded(ctx context.Context) error {
	in.endpoint = in.CRIEndpoint(in.h)
	needRestart := in.changed
	if !in.changed {
		// Give a containerd that is just starting (an earlier run's restart) time first.
		if s, err := cri.WaitReady(ctx, in.endpoint, min(in.opts.VerifyTimeout, 30*time.Second)); err == nil && s.Handlers[containerd.HandlerKata] {
			needRestart = false
		} else {
			needRestart = true
			in.log.Info("config unchanged but containerd does not serve the kata handler yet", "cri", in.endpoint, "err", err)
		}
	}
	if needRestart && !in.changed && in.allowRestart != nil && !in.allowRestart() {
		return ErrRestartDeferred
	}
	if needRestart {
		down, err := in.restartAndWait(ctx, in.endpoint, true, "install")
		in.rep.Restarted, in.rep.Downtime = true, down
		if err != nil {
			if _, isNone := in.opts.Restarter.(restart.None); isNone {
				return in.fail(ctx, fmt.Errorf("%w; with --restart=none, restart containerd yourself, then rerun", err))
			}
			return in.rollback(ctx, in.h, in.st, in.endpoint, err)
		}
		in.log.Info("containerd restarted and serves the kata handler", "restart", in.opts.Restarter.Describe(), "downtimeMs", down.Milliseconds())
	}
	in.step(StepVerified)
	return nil
}

// trySandbox starts a throwaway pod sandbox with the kata handler before the node is
// labelled: a node where containerd lists the handler but no VM can start (nested
// virtualisation off, no vhost-vsock, a broken guest image) passes every earlier step,
// and its kata-rc pods would hang in ContainerCreating. On failure the install stays
// as it is (containerd keeps serving the handler; uninstall still takes it back), the
// label stays false, an Event carries containerd's error, and `run` tries again.
// Nothing is started when the node is already labelled and this run changed nothing.
func (in *install) trySandbox(ctx context.Context) error {
	if in.opts.SkipSandboxCheck {
		in.log.Info("sandbox check skipped (--skip-sandbox-check)")
		return nil
	}
	if !in.rep.Changed && !in.rep.Restarted && in.currentLabel(ctx) == "true" {
		return nil
	}
	start := time.Now()
	err := cri.TrySandbox(ctx, in.endpoint, containerd.HandlerKata, in.opts.SandboxTimeout)
	in.metrics.sandboxCheck(err, time.Since(start))
	if err != nil {
		msg := fmt.Sprintf("containerd serves the kata handler, but a pod sandbox with it did not start, so the node stays unlabelled: %v", err)
		in.log.Error(err, "kata sandbox check failed; the node stays unlabelled")
		in.setLabel(ctx, "false")
		in.event(ctx, corev1.EventTypeWarning, nodestate.ReasonSandboxFailed, msg)
		return fmt.Errorf("%w: %s", ErrSandboxFailed, msg)
	}
	in.rep.SandboxStarted = time.Since(start)
	in.log.Info("a kata pod sandbox started and was removed", "tookMs", in.rep.SandboxStarted.Milliseconds())
	return nil
}

// finish forgets the rollback data once containerd serves the handler, drops versions
// nobody needs, labels the node ready and lifts the startup taint.
func (in *install) finish(ctx context.Context) error {
	if in.oldDropIn != "" && in.oldDropIn != in.plan.DropIn.Path {
		if err := atomicfile.Remove(in.hostPath(in.oldDropIn)); err != nil {
			in.log.Error(err, "remove the previous drop-in", "path", in.oldDropIn)
		}
	}
	in.st.Pending, in.st.Installed = nil, true
	if err := saveState(in.stateDir, in.st); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	keep := []string{in.res.Dir}
	if in.previous != "" {
		keep = append(keep, in.previous)
	}
	if err := in.art.Prune(keep...); err != nil {
		in.log.Error(err, "prune old Kata versions")
	}
	in.rep.Ready = true
	if cur := in.currentLabel(ctx); cur != "true" {
		in.setLabel(ctx, "true")
		in.event(ctx, corev1.EventTypeNormal, nodestate.ReasonReady, fmt.Sprintf("containerd serves the kata handler (Kata %s); node labelled %s=true", in.res.ID, nodestate.LabelRuntime))
	}
	if in.opts.Node != nil {
		if removed, err := in.opts.Node.RemoveStartupTaint(ctx); err != nil {
			in.log.Error(err, "remove startup taint")
		} else if removed {
			in.log.Info("startup taint removed", "taint", nodestate.TaintNotReady)
		}
	}
	return nil
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
