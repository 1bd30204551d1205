# containerd 2.x for the node bootstrapper's e2e tests (containerd 1.6 comes from Debian).
# Built from the github.com/containerd/containerd/v2 module pinned in
# e2e/tools/containerd/go.mod, into $(TOOLS_BIN), rebuilt when go.mod changes:
#   containerd2                      cmd/containerd
#   ctr2                             cmd/ctr, to import the test images (the pause image)
#   containerd-shim-runc-v2          the runc shim, found next to containerd2, for runc pods
#   containerd-shim-kata-standin     e2e/tools/containerd/kata-standin: containerd's runc
#                                    shim standing for Kata's shim, where no VM can start
CONTAINERD2_BIN    := $(TOOLS_BIN)/containerd2
CTR2_BIN           := $(TOOLS_BIN)/ctr2
RUNC_SHIM_BIN      := $(TOOLS_BIN)/containerd-shim-runc-v2
KATA_STANDIN_BIN   := $(TOOLS_BIN)/containerd-shim-kata-standin
CONTAINERD_GOFLAGS := -tags 'no_btrfs no_devmapper no_zfs'

tools: $(CONTAINERD2_BIN) $(CTR2_BIN) $(RUNC_SHIM_BIN) $(KATA_STANDIN_BIN)

CONTAINERD_ABOUT := from the containerd module pinned in e2e/tools/containerd (the first build takes a few minutes on 2 cores; the others reuse most of it)

$(CONTAINERD2_BIN): e2e/tools/containerd/go.mod e2e/tools/containerd/go.sum
	@CGO_ENABLED=0 e2e/tools/build.sh e2e/tools/containerd $@ github.com/containerd/containerd/v2/cmd/containerd "$(CONTAINERD_ABOUT)" $(CONTAINERD_GOFLAGS)

$(CTR2_BIN): e2e/tools/containerd/go.mod e2e/tools/containerd/go.sum
	@CGO_ENABLED=0 e2e/tools/build.sh e2e/tools/containerd $@ github.com/containerd/containerd/v2/cmd/ctr "$(CONTAINERD_ABOUT)" $(CONTAINERD_GOFLAGS)

$(RUNC_SHIM_BIN): e2e/tools/containerd/go.mod e2e/tools/containerd/go.sum
	@CGO_ENABLED=0 e2e/tools/build.sh e2e/tools/containerd $@ github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 "$(CONTAINERD_ABOUT)" $(CONTAINERD_GOFLAGS)

$(KATA_STANDIN_BIN): e2e/tools/containerd/go.mod e2e/tools/containerd/go.sum e2e/tools/containerd/kata-standin/main.go
	@CGO_ENABLED=0 e2e/tools/build.sh e2e/tools/containerd $@ ./kata-standin "$(CONTAINERD_ABOUT)" $(CONTAINERD_GOFLAGS)
