package bootstrap

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"

	corev1 "k8s.io/api/core/v1"

	"github.com/isolator-dev/isolator/bootstrap/containerd"
	"github.com/isolator-dev/isolator/bootstrap/cri"
	"github.com/isolator-dev/isolator/bootstrap/internal/atomicfile"
	"github.com/isolator-dev/isolator/bootstrap/nodestate"
)

// Uninstall takes everything back, in this order: remove the node label (no new kata-rc
// pods are scheduled here), remove the drop-in and isolator's imports entry, restart
// containerd so it stops serving kata, remove the artifacts. The admin's config is then
// byte-identical to before the install. Each step is idempotent, so rerunning after a
// crash converges.
func (b *Bootstrapper) Uninstall(ctx context.Context) (*Report, error) {
	rep, err := b.uninstall(ctx)
	b.metrics.uninstall(err)
	return rep, err
}

func (b *Bootstrapper) uninstall(ctx context.Context) (*Report, error) {
	h, err := b.Detect(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{Host: h}
	stateDir := b.hostPath(b.opts.StateDir)
	st, err := loadState(stateDir)
	if err != nil {
		return rep, err
	}
	if b.opts.Node != nil {
		if err := b.opts.Node.SetRuntimeLabel(ctx, ""); err != nil {
			return rep, err
		}
	}
	b.step(StepUnlabelled)

	mainPath, template := h.MainConfig, h.Template
	if st.MainConfig != "" {
		mainPath, template = st.MainConfig, st.Template
	}
	dropIn := st.DropIn
	if dropIn == "" {
		dropIn = defaultDropIn(mainPath)
	}
	removed, err := b.removeDropIn(dropIn)
	if err != nil {
		return rep, err
	}
	if st.CreatedDropInDir {
		b.removeCreatedDir(path.Dir(dropIn))
	}
	// Without a recorded entry (state lost), an exact import of isolator's own drop-in is
	// still isolator's: a stale import of a deleted file would stop containerd 1.x.
	entry := st.ImportEntry
	if entry == "" {
		entry = dropIn
	}
	mainBefore, _ := readHostFile(b.opts.HostRoot, mainPath)
	if err := b.removeFromMain(mainPath, template, entry, st.CreatedMain); err != nil {
		return rep, fmt.Errorf("remove isolator's imports entry from %s: %w", mainPath, err)
	}
	mainAfter, _ := readHostFile(b.opts.HostRoot, mainPath)
	rep.Changed = removed || mainBefore.Exists != mainAfter.Exists || !bytes.Equal(mainBefore.Data, mainAfter.Data)
	b.step(StepConfigRemoved)

	// Restart when isolator's config changed or containerd still serves kata (it read the
	// config isolator just removed, before a crash); otherwise restart nothing.
	endpoint := b.CRIEndpoint(h)
	needRestart := rep.Changed
	if s, err := cri.WaitReady(ctx, endpoint, b.opts.VerifyTimeout); err != nil {
		b.log.Error(err, "containerd is not ready; it reads the restored config when it starts")
	} else if s.Handlers[containerd.HandlerKata] {
		needRestart = true
	}
	if needRestart {
		down, err := b.restartAndWait(ctx, endpoint, false, "uninstall")
		rep.Restarted, rep.Downtime = true, down
		if err != nil {
			return rep, fmt.Errorf("after removing isolator's config: %w", err)
		}
	}

	if err := b.art.Remove(); err != nil {
		return rep, fmt.Errorf("remove Kata artifacts: %w", err)
	}
	b.step(StepArtifactsRemoved)
	if err := removeState(stateDir); err != nil {
		return rep, fmt.Errorf("remove state: %w", err)
	}
	b.event(ctx, corev1.EventTypeNormal, nodestate.ReasonUninstalled, "removed the kata handler, isolator's containerd config and the Kata artifacts")
	return rep, nil
}

// removeDropIn deletes isolator's drop-in, but only a file that is isolator's.
func (b *Bootstrapper) removeDropIn(p string) (bool, error) {
	f, err := readHostFile(b.opts.HostRoot, p)
	if err != nil || !f.Exists {
		return false, err
	}
	if !containerd.IsDropIn(f.Data) {
		return false, fmt.Errorf("%s is not isolator's drop-in (no isolator header); not removing it", p)
	}
	if err := atomicfile.Remove(b.hostPath(p)); err != nil {
		return false, err
	}
	return true, nil
}

// removeCreatedDir removes the drop-in's directory when isolator created it and it is
// empty; a directory that holds anything else stays.
func (b *Bootstrapper) removeCreatedDir(dir string) {
	if err := os.Remove(b.hostPath(dir)); err == nil {
		_ = atomicfile.SyncDir(b.hostPath(path.Dir(dir)))
	}
}

func defaultDropIn(mainPath string) string {
	return path.Join(path.Dir(mainPath), "conf.d", containerd.DropInName)
}
