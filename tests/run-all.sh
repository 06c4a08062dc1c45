#!/usr/bin/env bash
# Installs what the tests need and runs every check: the README's test command and CI's.
#
#   bash tests/run-all.sh [pytest args]
#
# The first run on a machine builds etcd, kube-apiserver, kube-controller-manager, kubectl,
# helm, syft, cosign, the registry and KWOK from the Go module proxy (about 15 minutes on 2
# cores), and fedkube's two images from their Dockerfiles, into ~/.cache/fedkube-tools; later
# runs reuse them (an image is rebuilt when what it is built from changes). torch is pinned, so pip's cache serves it
# after the first install.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "installing fedkube with its test extras"
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

step "installing Prometheus and promtool (Debian's package) if missing"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

step "building (or reusing) the control-plane binaries and KWOK"
bash tests/tools/build-binaries.sh
bash tests/tools/build-kwok.sh

step "building (or reusing) fedkube's images (debootstrap, buildah, umoci)"
bash tests/tools/build-images.sh

step "ruff, mypy, import layers"
ruff check .
ruff format --check .
mypy
lint-imports

step "pytest"
set +e
python3 -m pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no test; that is a failure here" >&2
  exit 1
fi
exit "$rc"
