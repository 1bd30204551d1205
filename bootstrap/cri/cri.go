// Package cri asks containerd, over the CRI API the kubelet uses, whether it is ready
// and which runtime handlers it serves. isolator labels a node ready for kata-rc only
// after containerd says it serves the kata handler.
package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	internalapi "k8s.io/cri-api/pkg/apis"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	remote "k8s.io/cri-client/pkg"
	"k8s.io/klog/v2"
)

// Status is what containerd reports about itself.
type Status struct {
	RuntimeReady bool
	// Handlers are the runtime handlers containerd serves: from runtimeHandlers
	// (containerd 2.x) and from the effective config.containerd.runtimes of the verbose
	// info (containerd 1.6 and later).
	Handlers map[string]bool
	// Config is the verbose info's effective CRI config, as JSON.
	Config string `json:"-"`
}

// callTimeout bounds one connection attempt and one Status call.
const callTimeout = 5 * time.Second

// pollInterval is how often WaitFor asks; it is also the resolution of the measured
// restart downtime.
const pollInterval = 25 * time.Millisecond

// Query asks the CRI endpoint (unix:///run/containerd/containerd.sock) for its status.
func Query(ctx context.Context, endpoint string) (*Status, error) {
	ctx = klog.NewContext(ctx, logr.Discard())
	svc, err := connect(ctx, endpoint, callTimeout)
	if err != nil {
		return nil, err
	}
	defer func() { _ = svc.Close(ctx) }()
	resp, err := svc.Status(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("CRI status at %s: %w", endpoint, err)
	}
	return parseStatus(resp)
}

// connect builds a CRI runtime client; timeout bounds the connection and each call.
// cri-client logs through klog: callers put a discarding logger into ctx, which keeps
// its connection retries out of isolator's log.
func connect(ctx context.Context, endpoint string, timeout time.Duration) (internalapi.RuntimeService, error) {
	svc, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint(endpoint).WithConnectionTimeout(timeout).Build(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to CRI at %s: %w", endpoint, err)
	}
	return svc, nil
}

// parseStatus reads readiness and handlers out of a verbose StatusResponse.
func parseStatus(resp *runtimeapi.StatusResponse) (*Status, error) {
	s := &Status{Handlers: map[string]bool{}}
	for _, c := range resp.GetStatus().GetConditions() {
		if c.GetType() == runtimeapi.RuntimeReady {
			s.RuntimeReady = c.GetStatus()
		}
	}
	for _, h := range resp.GetRuntimeHandlers() {
		s.Handlers[h.GetName()] = true
	}
	if raw, ok := resp.GetInfo()["config"]; ok {
		s.Config = raw
		var cfg struct {
			Containerd struct {
				Runtimes map[string]json.RawMessage `json:"runtimes"`
			} `json:"containerd"`
		}
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			return nil, fmt.Errorf("CRI status: verbose info config is not JSON: %w", err)
		}
		for name := range cfg.Containerd.Runtimes {
			s.Handlers[name] = true
		}
	}
	return s, nil
}

// ErrTimeout is returned when containerd did not reach the wanted state in time.
var ErrTimeout = errors.New("timed out")

// WaitFor polls endpoint until containerd is ready and serves handler (served true) or
// no longer serves it (served false), or until timeout. The last status or error is
// returned with ErrTimeout.
func WaitFor(ctx context.Context, endpoint, handler string, served bool, timeout time.Duration) (*Status, error) {
	return poll(ctx, endpoint, timeout, fmt.Sprintf("serve handler %q=%v", handler, served), func(st *Status) error {
		if st.RuntimeReady && st.Handlers[handler] == served {
			return nil
		}
		return fmt.Errorf("runtime ready %v, handler %q served %v", st.RuntimeReady, handler, st.Handlers[handler])
	})
}

// WaitReady polls endpoint until containerd's runtime is ready, or until timeout.
func WaitReady(ctx context.Context, endpoint string, timeout time.Duration) (*Status, error) {
	return poll(ctx, endpoint, timeout, "be ready", func(st *Status) error {
		if st.RuntimeReady {
			return nil
		}
		return errors.New("runtime not ready")
	})
}

// poll queries endpoint every pollInterval until want accepts the status, or until
// timeout; the error then says what was awaited and what was seen last.
func poll(ctx context.Context, endpoint string, timeout time.Duration, what string, want func(*Status) error) (*Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		st, err := Query(ctx, endpoint)
		if err == nil {
			if err = want(st); err == nil {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for containerd at %s to %s: %w (last: %w)", endpoint, what, ErrTimeout, err)
		case <-tick.C:
		}
	}
}

// SandboxLabel marks the throwaway pod sandboxes TrySandbox starts, so that one left
// behind by a process killed halfway is found and removed by the next try.
const SandboxLabel = "isolator.dev/sandbox-check"

// cleanupTimeout bounds stopping and removing a sandbox, even after ctx has ended.
const cleanupTimeout = 30 * time.Second

// TrySandbox proves that handler really starts pods: it runs a throwaway pod sandbox
// with it over CRI, exactly as the kubelet starts a pod's sandbox (pod network, the
// node's pause image), then stops and removes it. With Kata that boots a VM, so a node
// where the handler is configured but no VM can start (nested virtualisation off, no
// vhost-vsock, a broken guest image) fails here rather than leaving pods in
// ContainerCreating. The sandbox is always stopped and removed, also on failure and
// when ctx ends; timeout bounds the start (which may include pulling the pause image).
// The error carries containerd's own message.
func TrySandbox(ctx context.Context, endpoint, handler string, timeout time.Duration) error {
	ctx = klog.NewContext(ctx, logr.Discard())
	// cri-client bounds each call by its connection timeout (RunPodSandbox by twice
	// that); ctx bounds the whole try.
	svc, err := connect(ctx, endpoint, timeout)
	if err != nil {
		return err
	}
	defer func() { _ = svc.Close(ctx) }()
	cleanup := func(id string) error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if err := svc.StopPodSandbox(cctx, id); err != nil {
			return fmt.Errorf("stop sandbox %s: %w", id, err)
		}
		if err := svc.RemovePodSandbox(cctx, id); err != nil {
			return fmt.Errorf("remove sandbox %s: %w", id, err)
		}
		return nil
	}
	// A sandbox of an earlier try, left by a process killed before its cleanup.
	old, err := svc.ListPodSandbox(ctx, &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{SandboxLabel: "true"}})
	if err != nil {
		return fmt.Errorf("list sandboxes at %s: %w", endpoint, err)
	}
	for _, s := range old {
		if err := cleanup(s.GetId()); err != nil {
			return fmt.Errorf("remove the sandbox an earlier check left: %w", err)
		}
	}
	uid := fmt.Sprintf("isolator-%d", time.Now().UnixNano())
	config := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: "isolator-sandbox-check", Namespace: "isolator-sandbox-check", Uid: uid},
		Hostname: "isolator-sandbox-check",
		Labels:   map[string]string{SandboxLabel: "true"},
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				// Kata runs no sandbox in the host's network namespace: a pod network, as
				// every kata-rc pod has.
				NamespaceOptions: &runtimeapi.NamespaceOption{
					Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_POD, Ipc: runtimeapi.NamespaceMode_POD,
				},
			},
		},
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	id, err := svc.RunPodSandbox(runCtx, config, handler)
	if err != nil {
		// containerd removes a sandbox it could not start; one that it still lists goes
		// with the next try.
		return fmt.Errorf("start a pod sandbox with the %s handler: %w", handler, err)
	}
	return cleanup(id)
}
