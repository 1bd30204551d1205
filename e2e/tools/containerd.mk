# containerd 2.x for the node bootstrapper's e2e tests (containerd 1.6 comes from Debian).
# Built from the github.com/containerd/containerd/v2 module pinned in
# e2e/tools/containerd/go.mod; only cmd/containerd is needed to serve CRI Status, so no
# shim is built. The binary is $(TOOLS_BIN)/containerd2; it is rebuilt when go.mod changes.
CONTAINERD2_BIN := $(TOOLS_BIN)/containerd2

tools: $(CONTAINERD2_BIN)

$(CONTAINERD2_BIN): e2e/tools/containerd/go.mod e2e/tools/containerd/go.sum
	@mkdir -p $(TOOLS_BIN)
	cd e2e/tools/containerd && CGO_ENABLED=0 $(GO) build -trimpath -tags 'no_btrfs no_devmapper no_zfs' \
	  -o $@.tmp github.com/containerd/containerd/v2/cmd/containerd && mv $@.tmp $@
