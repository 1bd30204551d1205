# isolator build, test and tooling. Every target works on a fresh Debian machine with Go;
# `make tools` (called by the targets that need them) builds the test binaries once and
# caches them under $(TOOLS_BIN).
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT   ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -s -w -X github.com/isolator-dev/isolator/internal/version.Version=$(VERSION) -X github.com/isolator-dev/isolator/internal/version.Commit=$(COMMIT)
BIN      := $(CURDIR)/bin
# Test tools (kube-apiserver, containerd, ...) are cached outside the work tree so that
# a fresh clone on the same machine reuses them.
TOOLS_BIN ?= $(HOME)/.cache/isolator/bin
GOLANGCI_LINT_VERSION := v2.15.0
FUZZTIME ?= 60s
# Each minimisation (of a new input or a crasher) is bounded too: minimising a large new
# input (a whole containerd config) could otherwise take up the whole FUZZTIME.
FUZZMINIMIZETIME ?= 5s
BENCH ?= .
BENCHCOUNT ?= 6
BENCHPKGS ?= ./...
BENCHSTAT_VERSION := v0.0.0-20260908200009-22c9c6c9d4da

export PATH := $(TOOLS_BIN):$(PATH)
export ISOLATOR_TOOLS_BIN := $(TOOLS_BIN)
export ISOLATOR_BIN := $(BIN)/isolator
export ISOLATOR_WEBHOOK_BIN := $(BIN)/isolator-webhook

.PHONY: all build test unit e2e bench perf lint fuzz tools demo prereqs demo-prereqs image images clean help

# Debian packages the e2e suites run: etcd for the control plane, Debian's containerd
# 1.6 beside the module-built 2.4 for the node suite, dbus-daemon for the systemd
# stand-in's bus, and for the real node runc, the CNI plugins (bridge, host-local,
# loopback), iproute2 and iptables (kube-proxy). The demo needs etcd, and as root, for
# its node, runc, the CNI plugins and iproute2. `make prereqs` installs what is missing
# (as root), or prints the apt-get line to run.
DEBIAN_PACKAGES := etcd-server containerd dbus-daemon runc containernetworking-plugins iproute2 iptables
DEMO_PACKAGES   := etcd-server
DEMO_NODE_PACKAGES := runc containernetworking-plugins iproute2

all: build

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

build: ## Build bin/isolator, and bin/isolator-webhook as the webhook image ships it
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/isolator ./cmd/isolator
	$(GO) build -trimpath -tags webhookonly -ldflags '$(LDFLAGS)' -o $(BIN)/isolator-webhook ./cmd/isolator

test: unit e2e ## Run every test: unit, integration and e2e against real servers

unit: ## Unit tests, golden files and fuzz seed corpora (no servers)
	$(GO) vet -tags e2e ./...
	$(GO) test -race -count=1 ./...
	@# Invariants the race detector would distort: allocation counts, and the CEL cost
	@# of the largest backstops (ten times slower under race).
	$(GO) test -count=1 -run '^(Test.*AllocatesNothing|TestCostOfLargePolicies)$$' -v ./policy/ ./backstop/... | grep -E '^(---|ok|FAIL|PASS)|cost [0-9]'


e2e: prereqs build tools ## e2e tests against a real kube-apiserver, etcd and containerd
	@if [ -n "$$(find e2e -name '*_test.go' 2>/dev/null)" ]; then \
	  $(GO) test -tags e2e -count=1 -timeout 60m ./e2e/...; \
	else echo "e2e: no suites yet"; fi

# Each e2e/tools/*.mk adds its binaries as prerequisites of `tools`.
tools:

bench: $(TOOLS_BIN)/benchstat ## Benchmarks, printed as a benchstat table (BENCHCOUNT runs each)
	@mkdir -p $(BIN)
	$(GO) test -run '^$$' -bench "$(BENCH)" -benchmem -count $(BENCHCOUNT) $(BENCHPKGS) > $(BIN)/bench.txt
	$(TOOLS_BIN)/benchstat $(BIN)/bench.txt

# The load measurements of docs/performance.md, on one control plane; the JSON
# report lands in bin/perf.json. PERFFLAGS passes flags (go run ./e2e/perf all -h).
PERFFLAGS ?=
perf: build tools ## Load measurements: direct HTTPS, through the apiserver vs a MutatingAdmissionPolicy, memory, propagation
	$(GO) run ./e2e/perf all -o $(BIN)/perf.json $(PERFFLAGS)

$(TOOLS_BIN)/benchstat:
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) $(GO) install golang.org/x/perf/cmd/benchstat@$(BENCHSTAT_VERSION)

lint: $(TOOLS_BIN)/golangci-lint ## golangci-lint, gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) vet -tags e2e ./...
	$(TOOLS_BIN)/golangci-lint run --allow-parallel-runners ./...

$(TOOLS_BIN)/golangci-lint:
	@mkdir -p $(TOOLS_BIN)
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# Packages with fuzz targets are found by their *_test.go files; `go test -list` then
# names the targets, since -fuzz runs one target of one package at a time.
fuzz: ## Run every fuzz target in the module for FUZZTIME (default 60s) each
	@pkgs=$$($(GO) list -f '{{.ImportPath}} {{.Dir}}' ./... | while read -r pkg dir; do \
	  grep -lqs '^func Fuzz' "$$dir"/*_test.go && echo "$$pkg"; done); \
	for pkg in $$pkgs; do \
	  for t in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz'); do \
	    echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) "$$pkg" || exit 1; \
	  done; \
	done

# Images (Dockerfile): isolator-webhook and isolator-node, tagged $(IMAGE_TAG). The node
# image downloads the Kata static release KATA_VERSION and checks it against KATA_SHA256
# (required: take it from the release). Push them and set them in your overlay
# (docs/install.md).
DOCKER       ?= docker
IMAGE_PREFIX ?= isolator
IMAGE_TAG    ?= $(VERSION)
KATA_VERSION ?= 4.1.0
KATA_SHA256  ?=

image: ## Build the webhook and node images (docker; KATA_SHA256=... required)
	@test -n "$(KATA_SHA256)" || { echo "image: set KATA_SHA256 to the sha256 of kata-go-static-$(KATA_VERSION)-<arch>.tar.zst (from the Kata release page)" >&2; exit 2; }
	$(DOCKER) build --target webhook --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
	  -t $(IMAGE_PREFIX)-webhook:$(IMAGE_TAG) .
	$(DOCKER) build --target node --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) \
	  --build-arg KATA_VERSION=$(KATA_VERSION) --build-arg KATA_SHA256=$(KATA_SHA256) \
	  -t $(IMAGE_PREFIX)-node:$(IMAGE_TAG) .

# Images without a container engine: isolator-images writes $(IMAGES_DIR)/isolator-webhook.oci.tar
# and isolator-node.oci.tar, with the Dockerfile's user, entrypoint and paths on an empty
# base (the binaries are static). The node image carries the Kata release KATA_RELEASE (a
# kata-go-static tarball or a directory holding ./opt/kata); without it, the release
# KATA_VERSION is downloaded and checked against KATA_SHA256.
IMAGES_DIR   ?= $(BIN)/images
IMAGE_ARCH   ?= $(shell $(GO) env GOARCH)
KATA_RELEASE ?=

images: ## Build the webhook and node images as OCI archives, no Docker (KATA_RELEASE=<tarball> or KATA_SHA256=...)
	@mkdir -p $(IMAGES_DIR)
	@kata="$(KATA_RELEASE)"; \
	if [ -z "$$kata" ]; then \
	  file=kata-go-static-$(KATA_VERSION)-$(IMAGE_ARCH).tar.zst; kata=$(IMAGES_DIR)/$$file; \
	  if [ ! -f "$$kata" ]; then \
	    test -n "$(KATA_SHA256)" || { echo "images: set KATA_RELEASE to a Kata release tarball, or KATA_SHA256 to the sha256 of $$file (from the Kata $(KATA_VERSION) release page) to download it" >&2; exit 2; }; \
	    echo "images: downloading $$file"; \
	    curl -fL --retry 3 -o "$$kata.tmp" "https://github.com/kata-containers/kata-containers/releases/download/$(KATA_VERSION)/$$file"; \
	    echo "$(KATA_SHA256)  $$kata.tmp" | sha256sum -c - && mv "$$kata.tmp" "$$kata"; \
	  fi; \
	fi; \
	echo "images: building static binaries for linux/$(IMAGE_ARCH)"; \
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(IMAGES_DIR)/isolator ./cmd/isolator && \
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -tags webhookonly -ldflags '$(LDFLAGS)' -o $(IMAGES_DIR)/isolator-webhook ./cmd/isolator && \
	$(GO) run ./cmd/isolator-images -out $(IMAGES_DIR) -prefix $(IMAGE_PREFIX) -tag $(IMAGE_TAG) -arch $(IMAGE_ARCH) \
	  -webhook-binary $(IMAGES_DIR)/isolator-webhook -node-binary $(IMAGES_DIR)/isolator -kata "$$kata"

clean:
	rm -rf $(BIN)

# Test tool builds (kube-apiserver, containerd, ...), one file per tool module.
include $(wildcard e2e/tools/*.mk)

# The demo builds only what it runs: etcd (Debian), the control plane (kube-tools), the
# webhook binary the image ships, and the demo itself, each step saying what it does.
# As root it also runs a node, which needs kubelet, kube-scheduler, containerd 2.4 with
# its runc shim and ctr, the stand-in Kata shim, and bin/isolator (DEMO_NODE_TOOLS).
DEMO_ROOT := $(shell [ "$$(id -u)" = 0 ] && echo yes)
DEMO_NODE_TOOLS := $(if $(DEMO_ROOT),$(TOOLS_BIN)/kubelet $(TOOLS_BIN)/kube-scheduler $(CONTAINERD2_BIN) $(CTR2_BIN) $(RUNC_SHIM_BIN) $(KATA_STANDIN_BIN))
demo: demo-prereqs kube-tools $(DEMO_NODE_TOOLS) ## Run isolator on a local control plane with the example policies and pods, on a node when root (DEMO_EXIT=1 to exit)
	@echo "demo: building bin/isolator-webhook$(if $(DEMO_ROOT), and bin/isolator)"
	@$(GO) build -trimpath -tags webhookonly -ldflags '$(LDFLAGS)' -o $(BIN)/isolator-webhook ./cmd/isolator
	@$(if $(DEMO_ROOT),$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/isolator ./cmd/isolator)
	@echo "demo: building the demo (bin/demo; about 2 minutes the first time on 2 cores, then cached)"
	@start=$$SECONDS; ( while sleep 30; do echo "demo:   ... still compiling ($$((SECONDS - start))s)"; done ) & beat=$$!; \
	  trap 'kill $$beat 2>/dev/null || true' EXIT; $(GO) build -o $(BIN)/demo ./e2e/demo
	ISOLATOR_WEBHOOK_BIN=$(BIN)/isolator-webhook $(BIN)/demo

prereqs: ## Install the Debian packages the tests need when missing (as root), or print the apt-get line
	@e2e/tools/debian-packages.sh prereqs $(DEBIAN_PACKAGES)

demo-prereqs:
	@e2e/tools/debian-packages.sh demo $(DEMO_PACKAGES) $(if $(DEMO_ROOT),$(DEMO_NODE_PACKAGES))

# The packages, for .ci/run.
print-debian-packages:
	@echo $(DEBIAN_PACKAGES)

