#!/usr/bin/env bash
# Installs what the tests need and runs every check: the README's test command and CI's.
#
#   bash tests/run-all.sh [pytest args]
#
# The first run on a machine builds etcd, kube-apiserver, kube-controller-manager, kubectl,
# helm, syft, cosign, the registry and KWOK from the Go module proxy, and fedkube's two images
# from their Dockerfiles alongside (about 20 minutes on 2 cores), into ~/.cache/fedkube-tools; later
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

step "building (or reusing) the control-plane binaries, KWOK and fedkube's images, side by side"
# The images build (debootstrap, pip, gzip: mostly one core and the disk) beside the Go builds
# (both cores, with gaps while modules download and binaries link); they wait for syft only
# for their SBOMs at the end. Their output is shown once they are done.
# In a session of its own, so that a failure here stops the whole image build (buildah included).
images_log=$(mktemp "${TMPDIR:-/tmp}/fedkube-images.XXXXXX")
setsid bash tests/tools/build-images.sh >"$images_log" 2>&1 &
images_pid=$!
trap 'kill -- "-$images_pid" 2>/dev/null || true; rm -f "$images_log"' EXIT
bash tests/tools/build-binaries.sh
bash tests/tools/build-kwok.sh
images_ok=1
wait "$images_pid" || images_ok=0
sed 's/^/  [images] /' "$images_log"
[ "$images_ok" = 1 ] || { echo "building fedkube's images failed (output above)" >&2; exit 1; }

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
