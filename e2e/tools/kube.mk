# Kubernetes for the e2e tests: the control plane (kube-apiserver, kube-controller-manager
# and kubectl, what `make demo` needs) and the node's kubelet with kube-scheduler (the
# node suite), built from k8s.io/kubernetes by the module in e2e/tools/kube, and etcd
# from Debian's etcd-server package.
#
# The binaries are rebuilt only when missing or when e2e/tools/kube/go.mod or go.sum
# changed: a stamp named after their content sits next to the binaries.

KUBE_VERSION := v1.37.2
KUBE_TOOLS_DIR := $(CURDIR)/e2e/tools/kube
KUBE_TOOLS := kube-apiserver kube-controller-manager kubectl
KUBE_NODE_TOOLS := kubelet kube-scheduler kube-proxy
KUBE_MOD_SUM := $(shell cat $(KUBE_TOOLS_DIR)/go.mod $(KUBE_TOOLS_DIR)/go.sum | sha256sum | cut -c1-16)
KUBE_STAMP := $(TOOLS_BIN)/.kube-tools-$(KUBE_MOD_SUM)
# Without the -X flags the binaries report v0.0.0-master, and `kubectl version` and the
# apiserver's /version would not say what they are. -s -w drop the debug information: the
# link is quicker and the binaries a third of the size.
KUBE_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 \
  -X k8s.io/component-base/version.gitTreeState=clean

.PHONY: etcd-check kube-tools
tools: kube-tools $(addprefix $(TOOLS_BIN)/,$(KUBE_NODE_TOOLS))
# The control plane alone, what `make demo` needs.
kube-tools: etcd-check $(addprefix $(TOOLS_BIN)/,$(KUBE_TOOLS))

# Running it, not just finding it, also catches a broken install.
etcd-check:
	@etcd --version >/dev/null 2>&1 || /usr/bin/etcd --version >/dev/null 2>&1 || { \
	  echo "tools: etcd not found (or it does not run): the e2e tests run a real etcd;" \
	    "install it with 'apt-get install etcd-server' (.ci/run does this)" >&2; exit 1; }

$(KUBE_STAMP):
	@mkdir -p $(TOOLS_BIN)
	@rm -f $(TOOLS_BIN)/.kube-tools-*
	@touch $@

$(addprefix $(TOOLS_BIN)/,$(KUBE_TOOLS) $(KUBE_NODE_TOOLS)): $(KUBE_STAMP)
	@e2e/tools/build.sh $(KUBE_TOOLS_DIR) $@ k8s.io/kubernetes/cmd/$(notdir $@) \
	  "$(KUBE_VERSION) from k8s.io/kubernetes (the first build, of kube-apiserver, takes about 13 minutes on 2 cores; the others reuse most of it)" \
	  -ldflags '$(KUBE_LDFLAGS)'
