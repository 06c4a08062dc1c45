#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl), helm, syft (the images' SBOMs), cosign (signatures) and
# CNCF distribution's registry (the release's OCI registry in the tests) from the Go module
# proxy into a cache outside the repository, keyed by version. The tests start these;
# nothing is committed.
#
#   tests/tools/build-binaries.sh          build what is missing, print the bin folder
#   FEDKUBE_TOOLS_CACHE=/path ...          cache somewhere else (default ~/.cache/fedkube-tools)
#
# A cold build takes about 25 minutes on 2 cores (with the images and the first tests beside
# it, as tests/run-all.sh runs it); later runs reuse the cache at once.
set -euo pipefail

ETCD_VERSION=v3.6.16
K8S_VERSION=v1.35.4
HELM_VERSION=v3.21.4
SYFT_VERSION=v1.57.2
COSIGN_VERSION=v2.6.5
REGISTRY_VERSION=v3.1.2

cache=${FEDKUBE_TOOLS_CACHE:-$HOME/.cache/fedkube-tools}
bin="$cache/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION"
say() { printf '[build-binaries] %s\n' "$*" >&2; }

command -v go >/dev/null || { say "error: the Go toolchain is not on PATH; install Go 1.25 or newer"; exit 1; }
go_minor=$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')
[ "$go_minor" -ge 25 ] || { say "error: Go $(go env GOVERSION) is too old; Kubernetes $K8S_VERSION needs Go 1.25+"; exit 1; }

# Tools added after the folder's name was fixed carry their version in their own file name,
# with a link by the bare name to the version this script wants.
versioned="syft-$SYFT_VERSION cosign-$COSIGN_VERSION registry-$REGISTRY_VERSION"
have_all() {
  local b
  for b in etcd kube-apiserver kube-controller-manager kubectl helm $versioned; do
    [ -x "$bin/$b" ] || return 1
  done
  for b in $versioned; do
    [ "$(readlink "$bin/${b%%-v*}")" = "$b" ] || return 1
  done
}
if have_all; then
  echo "$bin"
  exit 0
fi

# One build at a time on this machine (two CI jobs, or a test that needs helm while the
# suite's setup builds): a second caller waits, then finds the binaries the first made.
mkdir -p "$bin"
exec 9>"$cache/binaries.lock"
flock 9
if have_all; then
  echo "$bin"
  exit 0
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/fedkube-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
# Go's module and build caches live in the throwaway folder: the binaries are what is kept
# (the caches would hold about 12 GB on a disk the images need).
# No DWARF from the compiler: the linker's -w drops it anyway, and making it took a sixth of
# the compile (helm from an empty build cache: 162-191 CPU-s with it, 135-155 without).
export GOFLAGS="-mod=mod -modcacherw -gcflags=all=-dwarf=false" CGO_ENABLED=0 \
  GOMODCACHE="$work/gomod" GOCACHE="$work/gocache"

fail_proxy() { say "error: could not fetch $1 from the Go module proxy ($(go env GOPROXY)); check network access to it"; exit 1; }

# One command of a Go module, at a version, through a throwaway module: $1 name, $2 package,
# $3 version, $4 output file, $5 ldflags.
go_tool() {
  local name=$1 package=$2 version=$3 out=$4 ldflags=$5
  say "building $name $version"
  mkdir -p "$work/$name" && cd "$work/$name"
  go mod init "fedkube.local/${name}build" >/dev/null 2>&1
  go get "$package@$version" >/dev/null 2>&1 || fail_proxy "$package@$version"
  go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp" "$package"
  mv "$out.tmp" "$out"
}

# The Kubernetes lane: etcd, then the three Kubernetes commands (one module, one build cache).
k8s_lane() {
  local t0=$SECONDS
  if [ ! -x "$bin/etcd" ]; then
    say "building etcd $ETCD_VERSION (its go.mod has replace directives, so through a throwaway module)"
    mkdir -p "$work/etcd" && cd "$work/etcd"
    go mod init fedkube.local/etcdbuild >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1 || fail_proxy "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin/etcd.tmp" "$bin/etcd"
  fi

  if [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kube-controller-manager" ] || [ ! -x "$bin/kubectl" ]; then
    say "building kube-apiserver, kube-controller-manager and kubectl $K8S_VERSION"
    mkdir -p "$work/k8s" && cd "$work/k8s"
    go mod init fedkube.local/k8sbuild >/dev/null 2>&1
    modfile=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
    [ -f "$modfile" ] || fail_proxy "k8s.io/kubernetes@$K8S_VERSION"
    # k8s.io/kubernetes requires its staging modules as v0.0.0 (served only from its own tree);
    # each is published on its own as v0.<minor>.<patch>.
    staging_version="v0.${K8S_VERSION#v1.}"
    go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
    for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile"); do
      go mod edit -replace "$m=$m@$staging_version"
    done
    # Each package names its version: a bare `go get pkg` would upgrade k8s.io/kubernetes.
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION" >"$work/go-get.log" 2>&1 || { tail -20 "$work/go-get.log" >&2; fail_proxy "the dependencies of k8s.io/kubernetes@$K8S_VERSION"; }
    minor=$(echo "$K8S_VERSION" | cut -d. -f2)
    ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean \
      -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
      -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
    for cmd in kube-apiserver kube-controller-manager kubectl; do
      say "  go build $cmd"
      go build -trimpath -ldflags "$ldflags" -o "$bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$bin/$cmd.tmp" "$bin/$cmd"
    done
  fi
  say "the Kubernetes lane took $((SECONDS - t0)) s"
}

# The tools' lane: each tool through its own throwaway module. (Called from an if's body, not
# after ||, so that errexit holds inside go_tool.)
tools_lane() {
  local t0=$SECONDS
  if [ ! -x "$bin/helm" ]; then
    go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$bin/helm" \
      "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  fi
  if [ ! -x "$bin/syft-$SYFT_VERSION" ]; then
    go_tool syft github.com/anchore/syft/cmd/syft "$SYFT_VERSION" "$bin/syft-$SYFT_VERSION" \
      "-X main.version=${SYFT_VERSION#v}"
  fi
  if [ ! -x "$bin/cosign-$COSIGN_VERSION" ]; then
    go_tool cosign github.com/sigstore/cosign/v2/cmd/cosign "$COSIGN_VERSION" \
      "$bin/cosign-$COSIGN_VERSION" "-X sigs.k8s.io/release-utils/version.gitVersion=$COSIGN_VERSION"
  fi
  if [ ! -x "$bin/registry-$REGISTRY_VERSION" ]; then
    go_tool registry github.com/distribution/distribution/v3/cmd/registry "$REGISTRY_VERSION" \
      "$bin/registry-$REGISTRY_VERSION" "-X github.com/distribution/distribution/v3/version.version=$REGISTRY_VERSION"
  fi
  say "the tools' lane took $((SECONDS - t0)) s"
}

# The two lanes run side by side: each spends minutes fetching modules and linking large
# binaries on one core, and the other lane's compiles fill those gaps (Go's build and module
# caches are safe to share between concurrent builds). A failed lane fails the script once
# both have stopped.
k8s_lane &
k8s_pid=$!
tools_lane &
tools_pid=$!
lanes_ok=1
wait "$k8s_pid" || lanes_ok=0
wait "$tools_pid" || lanes_ok=0
[ "$lanes_ok" = 1 ] || { say "error: a build failed (its output is above)"; exit 1; }
for b in $versioned; do ln -sfn "$b" "$bin/${b%%-v*}"; done  # the scripts run "$bin/syft" etc.

say "done in $(( $(date +%s) - start )) s; binaries in $bin"
echo "$bin"
