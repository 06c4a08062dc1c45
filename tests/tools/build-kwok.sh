#!/usr/bin/env bash
# Builds KWOK (simulated nodes and pods, for bench/operator_load.py) from the Go module proxy
# into the tools cache, keyed by version, and prints the binary's path. The load bench and
# its short version in the suite need it; tests/run-all.sh builds it beside build-binaries.sh.
#
#   tests/tools/build-kwok.sh              build if missing (about 3 minutes on 2 cores)
#   FEDKUBE_TOOLS_CACHE=/path ...          cache somewhere else (default ~/.cache/fedkube-tools)
set -euo pipefail

KWOK_VERSION=v0.8.0

cache=${FEDKUBE_TOOLS_CACHE:-$HOME/.cache/fedkube-tools}
out="$cache/kwok-$KWOK_VERSION/kwok"
say() { printf '[build-kwok] %s\n' "$*" >&2; }

if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
command -v go >/dev/null || { say "error: the Go toolchain is not on PATH; install Go 1.25 or newer"; exit 1; }

mkdir -p "$(dirname "$out")"
# One build at a time on this machine; a second caller finds the first one's binary.
exec 9>"$cache/kwok.lock"
flock 9
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/fedkube-kwok.XXXXXX")
trap 'rm -rf "$work"' EXIT
# No DWARF from the compiler (build-binaries.sh says why).
export GOFLAGS="-modcacherw -gcflags=all=-dwarf=false" CGO_ENABLED=0 GOMODCACHE="$work/gomod" GOCACHE="$work/gocache"
say "building kwok $KWOK_VERSION"
GOBIN="$work/bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
  || { say "error: could not build sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION from the Go module proxy ($(go env GOPROXY))"; exit 1; }
mv "$work/bin/kwok" "$out"
echo "$out"
