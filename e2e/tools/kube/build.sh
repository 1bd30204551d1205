#!/usr/bin/env bash
# Builds one Kubernetes command from this module into a tools directory, telling the person
# waiting what is happening: the first build compiles most of k8s.io/kubernetes and takes
# minutes, later builds come from the Go build cache.
#
#   build.sh OUTPUT PACKAGE VERSION [LDFLAGS]
set -euo pipefail

out=$1 pkg=$2 version=$3 ldflags=${4:-}
name=$(basename "$out")
cd "$(dirname "$0")"

echo "tools: building $name $version from k8s.io/kubernetes into $(dirname "$out");" \
  "the first build of kube-apiserver takes about 13 minutes on 2 cores, the others reuse most of it," \
  "later builds come from the cache"
start=$SECONDS
# A heartbeat, so that a quiet compile does not look like a hang.
( while sleep 30; do echo "tools:   ... still building $name ($((SECONDS - start))s)"; done ) &
heartbeat=$!
trap 'kill "$heartbeat" 2>/dev/null || true; rm -f "$out.tmp"' EXIT

mkdir -p "$(dirname "$out")"
# Build next to the target and rename, so that an interrupted build never leaves a
# truncated binary that later runs would take for a good one.
GOWORK=off go build -trimpath -ldflags "$ldflags" -o "$out.tmp" "$pkg"
mv -f "$out.tmp" "$out"
echo "tools: built $name $version in $((SECONDS - start))s"
