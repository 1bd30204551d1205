# syntax=docker/dockerfile:1
#
# isolator's images, one per role, built from one Go binary:
#   webhook  the admission webhook: the isolator binary on distroless static, non-root
#   node     the node bootstrapper: the isolator binary and the Kata Containers static
#            release, verified against KATA_SHA256, at /opt/isolator/kata
#
# `make image` builds both (docs/install.md). By hand:
#   docker build --target webhook --build-arg VERSION=v0.1.0 -t isolator-webhook:v0.1.0 .
#   docker build --target node --build-arg VERSION=v0.1.0 \
#     --build-arg KATA_VERSION=4.1.0 --build-arg KATA_SHA256=<sha256 of the tarball> \
#     -t isolator-node:v0.1.0 .
# Multi-platform builds (--platform linux/amd64,linux/arm64) cross-compile; give the
# KATA_SHA256 of each architecture's tarball by building each platform on its own.

ARG GO_VERSION=1.26.8

# The binary, cross-compiled on the build machine for the target platform.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
# No defaults: BuildKit sets both from --platform, and a default would override it (an
# arm64 build would get amd64 code).
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Two builds of the one binary: the full one for the node image, and one without the
# node bootstrapper (-tags webhookonly) for the webhook image, which is 35 MB instead of
# 58 MB and about 12 MiB smaller in memory (docs/performance.md).
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    ldflags="-s -w -X github.com/isolator-dev/isolator/internal/version.Version=${VERSION} -X github.com/isolator-dev/isolator/internal/version.Commit=${COMMIT}"; \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "$ldflags" -o /out/isolator ./cmd/isolator; \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -tags webhookonly -ldflags "$ldflags" -o /out/isolator-webhook ./cmd/isolator

# The Kata static release for the target architecture, checked before it is unpacked.
# Since Kata 4.0 the Go runtime (containerd-shim-kata-v2 and kata-runtime, which isolator
# checks the node with, with QEMU and its guest images) ships as
# kata-go-static-<version>-<arch>.tar.zst; kata-static-* holds the Rust runtime. It keeps
# the release's layout, ./opt/kata/{bin,libexec,share}, which is what
# `isolator node run --artifacts /opt/isolator/kata` installs on the node.
FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS kata
ARG TARGETARCH
ARG KATA_VERSION=4.1.0
ARG KATA_SHA256=
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl zstd \
 && rm -rf /var/lib/apt/lists/*
RUN set -eu; \
    file="kata-go-static-${KATA_VERSION}-${TARGETARCH}.tar.zst"; \
    if [ -z "${KATA_SHA256}" ]; then \
      echo "KATA_SHA256 is required: the sha256 of ${file} from the Kata ${KATA_VERSION} release" >&2; exit 1; \
    fi; \
    curl -fsSL --retry 3 -o "/tmp/${file}" \
      "https://github.com/kata-containers/kata-containers/releases/download/${KATA_VERSION}/${file}"; \
    echo "${KATA_SHA256}  /tmp/${file}" | sha256sum -c -; \
    mkdir -p /opt/isolator/kata; \
    tar --zstd -xf "/tmp/${file}" -C /opt/isolator/kata --no-same-owner; \
    test -x /opt/isolator/kata/opt/kata/bin/containerd-shim-kata-v2; \
    test -x /opt/isolator/kata/opt/kata/bin/kata-runtime; \
    rm "/tmp/${file}"

# The node bootstrapper runs as root: it writes containerd's configuration and the Kata
# files on the host (manifests/node explains each host mount).
FROM gcr.io/distroless/static-debian12 AS node
COPY --from=kata /opt/isolator/kata /opt/isolator/kata
COPY --from=build /out/isolator /isolator
ENTRYPOINT ["/isolator"]
CMD ["node", "run", "--host-root=/host", "--artifacts=/opt/isolator/kata"]

# The webhook: no shell, no package manager, uid 65532. Last, so that a plain
# `docker build .` builds it without needing the Kata release.
FROM gcr.io/distroless/static-debian12:nonroot AS webhook
COPY --from=build /out/isolator-webhook /isolator
USER 65532:65532
ENTRYPOINT ["/isolator"]
CMD ["webhook"]
