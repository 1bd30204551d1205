// Command kata-standin stands for Kata's containerd-shim-kata-v2 in isolator's e2e
// tests, on machines where no Kata VM can start (no usable KVM). It is containerd's own
// runc shim under another name: pods that containerd hands to the kata handler run as
// runc containers. The one difference is that it ignores the runtime options containerd
// sends, because those are Kata's (ConfigPath of its configuration.toml), which runc's
// shim cannot read.
//
// The fake Kata release (internal/testfixtures/fakekata) installs this binary as
// /opt/kata/bin/containerd-shim-kata-v2 when a test asks for a shim that starts sandboxes.
package main

import (
	"context"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/task"
	"github.com/containerd/containerd/v2/pkg/shim"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/containerd/v2/plugins"
	"github.com/containerd/plugin"
	"github.com/containerd/plugin/registry"
	"github.com/containerd/ttrpc"
)

func init() {
	registry.Register(&plugin.Registration{
		Type:     plugins.TTRPCPlugin,
		ID:       "task",
		Requires: []plugin.Type{plugins.EventPlugin, plugins.InternalPlugin},
		InitFn: func(ic *plugin.InitContext) (any, error) {
			pp, err := ic.GetByID(plugins.EventPlugin, "publisher")
			if err != nil {
				return nil, err
			}
			ss, err := ic.GetByID(plugins.InternalPlugin, "shutdown")
			if err != nil {
				return nil, err
			}
			svc, err := task.NewTaskService(ic.Context, pp.(shim.Publisher), ss.(shutdown.Service))
			if err != nil {
				return nil, err
			}
			return withoutKataOptions{svc}, nil
		},
	})
}

// withoutKataOptions is runc's task service with the runtime options dropped on Create.
type withoutKataOptions struct {
	taskAPI.TTRPCTaskService
}

func (s withoutKataOptions) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	r.Options = nil
	return s.TTRPCTaskService.Create(ctx, r)
}

func (s withoutKataOptions) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

func main() {
	shim.RunShim(context.Background(), manager.NewShimManager("io.containerd.kata.v2"))
}
