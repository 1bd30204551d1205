#!/usr/bin/env bash
# Installs the Debian packages given as arguments when they are missing: as root with
# apt-get, or else says the exact command to run and fails. `make prereqs` (for the
# tests), `make demo` and .ci/run all come through here.
#
#   debian-packages.sh WHO PACKAGE...
set -euo pipefail
who=$1
shift
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "$who: missing Debian packages: ${missing[*]}" >&2
  echo "$who: run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "$who: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# The package lists of a fresh machine may be empty or stale: update once, on failure.
apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update >/dev/null
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
}
echo "$who: installed ${missing[*]}"
