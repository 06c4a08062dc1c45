#!/usr/bin/env bash
# Builds fedkube's images from their Dockerfiles without a Docker daemon or a registry, into
# OCI layouts that the release pushes and the tests' node agent unpacks (umoci) into bundles
# that runc starts. Everything lives in a cache outside the repository, keyed by its inputs.
#
#   tests/tools/build-images.sh          build what is missing; prints "name reference folder"
#   FEDKUBE_TOOLS_CACHE=/path ...        cache somewhere else (default ~/.cache/fedkube-tools)
#
# 1. The base: no registry serves python:3.11-slim here, so Debian's debootstrap makes a
#    bookworm root filesystem (Python 3.11) and buildah commits it as a local image.
# 2. buildah (vfs storage, chroot isolation) builds trainer-image/Dockerfile and
#    operator/Dockerfile on that base. pip's cache is lent to the build: torch comes from it
#    after the first install. (vfs stores every layer as a whole copy of the root, so no
#    layer cache is kept: an image is rebuilt whole when any input changes.)
# 3. buildah push to an OCI layout (gzip layers, as a registry serves them), the folder's
#    oci/; image.json beside it is the image's OCI config.
# 4. syft (built by build-binaries.sh) writes the image's SBOM from that layout beside it
#    (sbom.cdx.json, CycloneDX: the Debian and Python packages in the image). The SBOMs come
#    last, once both images are built, so that this script can run beside a cold
#    build-binaries.sh (as tests/run-all.sh does) and wait for syft only at the end.
#
# The reference's tag is the version, with the variant for the engine (0.1.0-cu132).
#
# The engine image is built as its cu132 variant (PyPI's torch with CUDA 13.2, several GB):
# PyPI is the only index reachable here, so the cpu variant's lock cannot be written here.
# Each image is labelled with the last commit that changed its inputs (revision, created).
set -euo pipefail

# The whole script is one function, read before it runs: editing this file while a build runs
# does not derail it.
main() {

SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
BASE_RECIPE=2  # bump when the base recipe below changes
ENGINE_VARIANT=${FEDKUBE_ENGINE_VARIANT:-cu132}

root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${FEDKUBE_TOOLS_CACHE:-$HOME/.cache/fedkube-tools}/images
say() { printf '[build-images] %s\n' "$*" >&2; }
mkdir -p "$cache/layouts"
exec 9>"$cache/lock"
flock 9  # one build at a time; a second caller waits and then finds the cache

need=()
for tool in debootstrap buildah umoci runc skopeo; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ "${#need[@]}" -gt 0 ]; then
  say "installing ${need[*]} (Debian's packages)"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

# buildah's temporary files (a layer's whole uncompressed tar while it commits: GBs for the
# engine) go in the cache, not /var/tmp: a build that is killed leaves them where the next
# one finds and deletes them.
bah() {
  TMPDIR="$cache/tmp" buildah --storage-driver vfs --root "$cache/storage" --runroot "$cache/run" "$@"
}
# A build that was killed leaves its working containers (whole root copies under vfs, GBs
# each) and its temporary files; none can be in use while this holds the lock.
bah rm --all >/dev/null 2>&1 || true
rm -rf "$cache/tmp"
mkdir -p "$cache/tmp"
version=$(sed -nE 's/^__version__ = "([^"]+)"$/\1/p' "$root/trainer-image/fedkube/__init__.py")
timings="$cache/build-times.log"

# -- 1. the base image --------------------------------------------------------------------
base_key=$(printf '%s|%s|%s' "$SUITE" "$BASE_PACKAGES" "$BASE_RECIPE" | sha256sum | cut -c1-12)
base="localhost/fedkube-base:$SUITE-$base_key"
have_base() { bah inspect --type image "$base" >/dev/null 2>&1; }
make_base() {
  local start work ctr mnt
  start=$(date +%s)
  work=$(mktemp -d "$cache/base.XXXXXX")
  say "debootstrap $SUITE with $BASE_PACKAGES (a few minutes)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; say "error: debootstrap failed (log above)"; exit 1; }
  # What a slim image leaves out: package caches, documentation, manuals, translations.
  rm -rf "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/var/cache/apt/"*.bin \
    "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/usr/share/doc/"* \
    "$work/rootfs/usr/share/man/"* "$work/rootfs/usr/share/info/"* \
    "$work/rootfs/usr/share/locale/"*
  # This machine reaches PyPI through a TLS proxy with its own CA: the builds trust what the
  # host trusts, as a base image made in-house would.
  cp /etc/ssl/certs/ca-certificates.crt "$work/rootfs/etc/ssl/certs/ca-certificates.crt"
  ctr=$(bah from scratch)
  mnt=$(bah mount "$ctr")
  tar -C "$work/rootfs" -cf - . | tar -C "$mnt" -xpf -
  bah umount "$ctr" >/dev/null
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd /bin/sh "$ctr"
  bah commit --quiet --rm "$ctr" "$base" >/dev/null
  rm -rf "$work"
  # Earlier recipes' bases go.
  bah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/fedkube-base:' | grep -vx "$base" |
    xargs -r buildah --storage-driver vfs --root "$cache/storage" --runroot "$cache/run" \
      rmi --force >/dev/null 2>&1 || true
  echo "$(date -u +%FT%TZ) base $SUITE-$base_key cold $(($(date +%s) - start))s" >>"$timings"
}

# -- 2-3. the images, each keyed by everything its build reads ------------------------------
inputs_of() {  # $1: Dockerfile; prints the files its build reads, one per line
  local dockerfile=$1 sources=(trainer-image/fedkube)
  # The engine's image holds no operator code; the operator's holds both.
  [ "$dockerfile" = operator/Dockerfile ] && sources+=(operator/fedkube_operator)
  (cd "$root" && git ls-files -co --exclude-standard -- "$dockerfile" .dockerignore \
    pyproject.toml LICENSE trainer-image/locks "${sources[@]}" |
    grep -v -e '__pycache__' -e '\.pyc$' | LC_ALL=C sort)
}

inputs_key() {  # $1: Dockerfile; the rest: build arguments
  local dockerfile=$1
  shift
  {
    printf '%s\n' "$base" "$@"
    inputs_of "$dockerfile" | (cd "$root" && xargs sha256sum)
  } | sha256sum | cut -c1-16
}

revision_args() {  # $1: Dockerfile; the last commit that changed its inputs, and its time
  local files rev created
  mapfile -t files < <(inputs_of "$1")
  rev=$(git -C "$root" log -1 --format=%H -- "${files[@]}" 2>/dev/null || true)
  created=$(git -C "$root" log -1 --format=%cI -- "${files[@]}" 2>/dev/null || true)
  # Inputs that differ from that commit: the label says so rather than name it alone.
  if [ -n "$(git -C "$root" status --porcelain -- "${files[@]}")" ]; then rev="${rev:-none}-dirty"; fi
  printf '%s\n' "REVISION=${rev:-unknown}" "CREATED=${created:-unknown}"
}

build_args() {  # $1: Dockerfile, the rest: --build-arg values; sets args
  local dockerfile=$1 a
  shift
  args=(--build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version")
  while read -r a; do args+=(--build-arg "$a"); done < <(revision_args "$dockerfile")
  for a in "$@"; do args+=(--build-arg "$a"); done
}

layout_of() {  # $1: name, $2: Dockerfile, the rest: --build-arg values; its layout's folder
  local name=$1 dockerfile=$2 args
  shift 2
  build_args "$dockerfile" "$@"
  echo "$cache/layouts/$name-$(inputs_key "$dockerfile" "${args[@]}")"
}

missing() {  # $1: a layout's folder; true when it must be built (or is an older script's)
  [ ! -e "$1/.complete" ] || [ ! -d "$1/oci" ]
}

build() {  # $1: name, $2: tag, $3: Dockerfile, the rest: --build-arg values
  local name=$1 tag=$2 dockerfile=$3
  shift 3
  local args key ref layout
  build_args "$dockerfile" "$@"
  key=$(inputs_key "$dockerfile" "${args[@]}")
  ref="localhost/fedkube/$name:$tag"
  layout="$cache/layouts/$name-$key"
  if missing "$layout"; then
    local start
    start=$(date +%s)
    say "building $name from $dockerfile (key $key)"
    mkdir -p "$HOME/.cache/pip"
    # buildah re-executes itself from a sealed memfd copy for each RUN step; the kernel can
    # refuse the seal while the copy's pages are still referenced ("Close_Fd sealing memfd
    # copy: Device or resource busy", seen once in CI). That one error is retried; any other
    # fails the build at once.
    local attempt log="$cache/build-$name.log"
    for attempt in 1 2 3; do
      if (cd "$root" && bah build --quiet --isolation chroot --network host \
        --volume "$HOME/.cache/pip:/root/.cache/pip" \
        -f "$dockerfile" "${args[@]}" -t "$ref" -t "$ref-$key" .) >"$log" 2>&1; then
        cat "$log" >&2
        break
      fi
      cat "$log" >&2
      if [ "$attempt" -lt 3 ] && grep -q 'sealing memfd copy' "$log"; then
        say "buildah could not seal its memfd copy; building $name again ($((attempt + 1)) of 3)"
        bah rm --all >/dev/null 2>&1 || true
        continue
      fi
      say "error: building $name from $dockerfile failed (output above)"
      exit 1
    done
    local built
    built=$(date +%s)
    rm -rf "$layout" "$layout.tmp"
    mkdir -p "$layout.tmp"
    bah push --quiet "$ref-$key" "oci:$layout.tmp/oci:$tag" >&2
    bah inspect --type image "$ref-$key" |
      python3 -c 'import json, sys; json.dump(json.load(sys.stdin)["OCIv1"], sys.stdout)' \
        >"$layout.tmp/image.json"
    du -sb "$layout.tmp/oci/blobs" | cut -f1 >"$layout.tmp/compressed-bytes"
    touch "$layout.tmp/.complete"
    mv "$layout.tmp" "$layout"
    # The layout is what is published and run: the built image, its stages, older layouts
    # (and the unpacked bundles that earlier versions of this script kept) go, GBs each.
    for old in "$cache/layouts/$name"-*; do [ "$old" = "$layout" ] || rm -rf "$old"; done
    rm -rf "$cache/bundles"
    bah images --format '{{.Name}}:{{.Tag}}' | grep "^localhost/fedkube/$name:" |
      xargs -r buildah --storage-driver vfs --root "$cache/storage" --runroot "$cache/run" \
        rmi --force >/dev/null 2>&1 || true
    bah rm --all >/dev/null 2>&1 || true
    bah rmi --prune >/dev/null 2>&1 || true
    echo "$(date -u +%FT%TZ) $name $key build $((built - start))s push $(($(date +%s) - built))s" \
      "compressed $(numfmt --to=iec <"$layout/compressed-bytes")" >>"$timings"
  fi
  built_images+=("$name $ref $layout")
}

sbom() {  # $1: name, $2: its folder; the image's packages as CycloneDX JSON, beside its layout
  local start
  # build-binaries.sh holds its lock while it builds: this waits for syft, or finds it at once.
  [ -n "$syft" ] || syft="$(bash "$root/tests/tools/build-binaries.sh")/syft"
  start=$(date +%s)
  SYFT_CHECK_FOR_APP_UPDATE=false SYFT_FILE_METADATA_SELECTION=none \
    "$syft" scan "oci-dir:$2/oci" --quiet --source-name "fedkube/$1" --source-version "$version" \
    -o "cyclonedx-json=$2/sbom.cdx.json.tmp" >&2
  mv "$2/sbom.cdx.json.tmp" "$2/sbom.cdx.json"
  echo "$(date -u +%FT%TZ) $1 sbom $(($(date +%s) - start))s" >>"$timings"
}

# -- room on the disk, before anything is built ---------------------------------------------
# vfs keeps whole copies of an image's root while it builds and commits (the working
# container, the committed layer, its tar in $cache/tmp): the engine's build peaked at 24 GB
# more on the disk (measured with df every 2 s), the operator's and the base's at about 1 GB.
# A build that runs out fails minutes in, with an error from deep inside buildah.
need_gb=0 base_missing=0
have_base || { base_missing=1; need_gb=$((need_gb + 1)); }
missing "$(layout_of engine trainer-image/Dockerfile "VARIANT=$ENGINE_VARIANT")" &&
  need_gb=$((need_gb + 25))
missing "$(layout_of operator operator/Dockerfile)" && need_gb=$((need_gb + 1))
free_gb=$(df -P -k "$cache" | awk 'NR == 2 { print int($4 / 1048576) }')
if [ "$need_gb" -gt 0 ] && [ "$free_gb" -lt "$need_gb" ]; then
  say "error: building fedkube's images needs about $need_gb GB free on the disk of $cache;" \
    "it has $free_gb GB. Free some space there (older caches, /var/tmp), or set" \
    "FEDKUBE_TOOLS_CACHE to a folder on a disk with room."
  exit 1
fi

[ "$base_missing" = 0 ] || make_base
built_images=()
build engine "$version-$ENGINE_VARIANT" trainer-image/Dockerfile "VARIANT=$ENGINE_VARIANT"
build operator "$version" operator/Dockerfile
syft=
local line name layout
for line in "${built_images[@]}"; do
  read -r name _ layout <<<"$line"
  [ -s "$layout/sbom.cdx.json" ] || sbom "$name" "$layout"
done
printf '%s\n' "${built_images[@]}"
}

main "$@"
