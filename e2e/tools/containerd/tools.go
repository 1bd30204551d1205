//go:build tools

// Package tools pins the containerd 2.x version that isolator's node e2e tests run
// against. It is a separate module so that containerd's dependencies never enter
// isolator's own go.mod; e2e/tools/containerd.mk builds cmd/containerd from it.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
