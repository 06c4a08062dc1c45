#!/usr/bin/env bash
# Installs what the tests need and runs every check: the README's test command and CI's.
#
#   bash tests/run-all.sh [pytest args]
#
# The first run on a machine builds etcd, kube-apiserver, kube-controller-manager, kubectl,
# helm, syft, cosign, the registry and KWOK from the Go module proxy, and fedkube's two images
# from their Dockerfiles alongside (about 25 minutes on 2 cores), into ~/.cache/fedkube-tools;
# later runs reuse them (an image is rebuilt when what it is built from changes). torch is
# pinned, so pip's cache serves it after the first install.
#
# Without arguments the tests run in two parts: the ones that need none of those tools (local
# jobs, the engine, privacy, fuzzing) start at once, beside the builds, at a lower priority;
# the ones marked needs_tools (the control plane, helm, the images) start when the builds are
# done. The first part fills the cores that the builds and the control plane leave idle.
# With arguments, one pytest runs them after the builds.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
pytest_args=(-q -p no:cacheprovider --durations=15)
# pytest's exit status, with "collected no test" (5) made a failure.
checked() {
  if [ "$1" -eq 5 ]; then
    echo "pytest collected no test ($2); that is a failure here" >&2
    return 1
  fi
  return "$1"
}

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
# for their SBOMs at the end. KWOK's compiles fill the Kubernetes lane's last minutes. Each
# runs in a session of its own, so that a failure stops the rest (buildah included); the
# output is shown once they are done.
work=$(mktemp -d "${TMPDIR:-/tmp}/fedkube-run-all.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
setsid bash tests/tools/build-images.sh >"$work/images.log" 2>&1 &
images_pid=$!
setsid bash -c 'set -e; bash tests/tools/build-kwok.sh & kwok=$!
  bash tests/tools/build-binaries.sh; wait "$kwok"' >"$work/binaries.log" 2>&1 &
binaries_pid=$!
pids+=("$images_pid" "$binaries_pid")

step "ruff, mypy, import layers"
ruff check .
ruff format --check .
mypy
lint-imports

if [ "$#" -eq 0 ]; then
  step "pytest, the tests that need no tools (beside the builds; output below when done)"
  # tests/support/tools.py refuses to build a tool from this run (it would wait on the
  # builds' lock): a test that needs one must be marked needs_tools.
  FEDKUBE_TESTS_WITHOUT_TOOLS=1 setsid nice -n 5 \
    python3 -m pytest "${pytest_args[@]}" -m "not needs_tools" >"$work/local.log" 2>&1 &
  local_pid=$!
  pids+=("$local_pid")
fi

builds_ok=1
wait "$binaries_pid" || builds_ok=0
sed 's/^/  [binaries] /' "$work/binaries.log"
wait "$images_pid" || builds_ok=0
sed 's/^/  [images] /' "$work/images.log"
if [ "$builds_ok" != 1 ]; then
  if [ "$#" -eq 0 ]; then
    kill -- "-$local_pid" 2>/dev/null || true
    step "pytest, the tests that need no tools, as far as they got"
    cat "$work/local.log"
  fi
  echo "building the tools or the images failed (output above)" >&2
  exit 1
fi

set +e
if [ "$#" -gt 0 ]; then
  step "pytest $*"
  python3 -m pytest "${pytest_args[@]}" "$@"
  rc=$?
  set -e
  checked "$rc" "$*"
  exit
fi

step "pytest, the tests that need the tools (the control plane, helm, the images)"
python3 -m pytest "${pytest_args[@]}" -m needs_tools
tools_rc=$?
wait "$local_pid"
local_rc=$?
set -e
step "pytest, the tests that need no tools (they ran beside the above)"
cat "$work/local.log"
ok=1
checked "$tools_rc" "needs_tools" || { ok=0; echo "the tests that need the tools failed" >&2; }
checked "$local_rc" "not needs_tools" || { ok=0; echo "the tests that need no tools failed" >&2; }
[ "$ok" = 1 ]
