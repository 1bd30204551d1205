package bootstrap

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/isolator-dev/isolator/bootstrap/containerd"
	"github.com/isolator-dev/isolator/bootstrap/cri"
)

// Status describes isolator's install on the node.
type Status struct {
	Host *Host
	// Installed is true when the state file says a verified install is in place.
	Installed bool
	// DropIn and ArtifactsDir are isolator's files.
	DropIn       string
	ArtifactsDir string
	// Drift lists differences from what isolator installed (empty when in sync).
	Drift []string
	// Serving is true when containerd serves the kata handler; CRIError says why not.
	Serving  bool
	CRIError string
	KVM      bool
}

// Status inspects the node without changing anything.
func (b *Bootstrapper) Status(ctx context.Context) (*Status, error) {
	h, err := b.Detect(ctx)
	if err != nil {
		return nil, err
	}
	out := &Status{Host: h}
	_, kerr := os.Stat(b.opts.KVMDevice)
	out.KVM = kerr == nil
	st, err := loadState(b.hostPath(b.opts.StateDir))
	if err != nil {
		return out, err
	}
	out.Installed, out.DropIn, out.ArtifactsDir = st.Installed, st.DropIn, st.ArtifactsDir
	out.Drift, err = b.drift(h, st)
	if err != nil {
		out.Drift = append(out.Drift, err.Error())
	}
	if s, err := cri.Query(ctx, b.CRIEndpoint(h)); err != nil {
		out.CRIError = err.Error()
	} else {
		out.Serving = s.RuntimeReady && s.Handlers[containerd.HandlerKata]
	}
	return out, nil
}

// drift compares the node with what isolator installed.
func (b *Bootstrapper) drift(h *Host, st *State) ([]string, error) {
	if !st.Installed {
		return nil, nil
	}
	var drift []string
	problems, err := b.art.Verify(st.ArtifactsDigest)
	if err != nil {
		return nil, err
	}
	for _, p := range problems {
		drift = append(drift, "artifacts: "+p)
	}
	plan, err := b.plan(h)
	if err != nil {
		return drift, fmt.Errorf("containerd config: %w", err)
	}
	cur, err := readHostFile(b.opts.HostRoot, plan.DropIn.Path)
	if err != nil {
		return drift, err
	}
	switch {
	case !cur.Exists:
		drift = append(drift, "drop-in "+plan.DropIn.Path+" is missing")
	case !bytes.Equal(cur.Data, plan.DropIn.Data):
		drift = append(drift, "drop-in "+plan.DropIn.Path+" differs from what isolator renders")
	}
	if plan.MainChanged {
		drift = append(drift, h.MainConfig+" no longer imports the drop-in")
	}
	return drift, nil
}
