#!/usr/bin/env bash
# Builds one Go command of a tool module (e2e/tools/kube, e2e/tools/containerd) into the
# tools directory, telling the person waiting what is happening: a first build compiles
# a large module and takes minutes, later builds come from the Go build cache.
#
#   build.sh MODULE_DIR OUTPUT PACKAGE ABOUT [GO BUILD FLAGS...]
set -euo pipefail

dir=$1 out=$2 pkg=$3 about=$4
shift 4
name=$(basename "$out")
cd "$dir"

echo "tools: building $name $about into $(dirname "$out"); later builds come from the cache"
start=$SECONDS
# A heartbeat, so that a quiet compile does not look like a hang.
( while sleep 30; do echo "tools:   ... still building $name ($((SECONDS - start))s)"; done ) &
heartbeat=$!
trap 'kill "$heartbeat" 2>/dev/null || true; rm -f "$out.tmp"' EXIT

mkdir -p "$(dirname "$out")"
# Build next to the target and rename, so that an interrupted build never leaves a
# truncated binary that later runs would take for a good one.
GOWORK=off go build -trimpath "$@" -o "$out.tmp" "$pkg"
mv -f "$out.tmp" "$out"
echo "tools: built $name in $((SECONDS - start))s"
