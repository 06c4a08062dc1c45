#!/usr/bin/env bash
# Builds a fedkube release and publishes it to an OCI registry, signed:
#
#   tests/tools/release.sh --registry HOST[:PORT][/PATH] --key cosign.key --out DIR [--plain-http]
#
# COSIGN_PASSWORD holds the signing key's password (cosign generate-key-pair made the key).
#
# 1. the Python package: wheel and sdist (python -m build), checked with twine;
# 2. both images (tests/tools/build-images.sh, cached), pushed by digest with skopeo as
#    REGISTRY/fedkube/engine:VERSION-VARIANT and REGISTRY/fedkube/operator:VERSION, each
#    signed with cosign and its SBOM attached as a signed CycloneDX attestation;
# 3. the chart (helm package), pushed as oci://REGISTRY/charts/fedkube:VERSION and signed;
# 4. OUT holds dist/ (wheel, sdist), chart/ (the .tgz), sbom/ (one per image), the public key
#    and release.json: every artefact with its digest.
#
# The published registry is ghcr.io/fedkube (the chart's defaults name it); the tests publish
# to a registry they start. Signatures are key-based and not uploaded to a transparency log,
# so a release needs no network beyond the registry. One release at a time on a machine.
set -euo pipefail

BUILD_VERSION=1.6.1
TWINE_VERSION=7.0.0

main() {
  local registry="" key="" out="" plain_http=0
  while [ $# -gt 0 ]; do
    case $1 in
      --registry) registry=$2; shift 2 ;;
      --key) key=$2; shift 2 ;;
      --out) out=$2; shift 2 ;;
      --plain-http) plain_http=1; shift ;;
      *) echo "release.sh: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
    esac
  done
  [ -n "$registry" ] && [ -n "$key" ] && [ -n "$out" ] ||
    { echo "release.sh: --registry, --key and --out are needed (see the top of $0)" >&2; exit 2; }
  [ -r "$key" ] || { echo "release.sh: cannot read the signing key $key" >&2; exit 2; }
  [ -r "${key%.key}.pub" ] || { echo "release.sh: no public key ${key%.key}.pub beside $key" >&2; exit 2; }

  local root cache bin version
  root=$(cd "$(dirname "$0")/../.." && pwd)
  cache=${FEDKUBE_TOOLS_CACHE:-$HOME/.cache/fedkube-tools}
  mkdir -p "$cache" "$out"
  out=$(cd "$out" && pwd)
  exec 8>"$cache/release.lock"
  flock 8
  say() { printf '[release] %s\n' "$*" >&2; }
  bin=$(bash "$root/tests/tools/build-binaries.sh")
  version=$(sed -nE 's/^__version__ = "([^"]+)"$/\1/p' "$root/trainer-image/fedkube/__init__.py")
  local chart_version
  chart_version=$(sed -nE 's/^version: *"?([^"]+)"?$/\1/p' "$root/helm/fedkube/Chart.yaml")
  [ "$chart_version" = "$version" ] ||
    { say "error: the chart is $chart_version but fedkube is $version: one version for all"; exit 1; }

  local tls=true http=() cosign_http=()
  if [ "$plain_http" = 1 ]; then tls=false http=(--plain-http) cosign_http=(--allow-http-registry); fi
  export COSIGN_PASSWORD=${COSIGN_PASSWORD:-} TUF_ROOT="$cache/tuf"
  local cosign_sign=("$bin/cosign" sign --key "$key" --tlog-upload=false "${cosign_http[@]}" --yes)
  rm -rf "$out/dist" "$out/chart" "$out/sbom" "$out/release.json"
  mkdir -p "$out/dist" "$out/chart" "$out/sbom"
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/fedkube-release.XXXXXX")
  # shellcheck disable=SC2064 # the folder's name now: $work is local to main
  trap "rm -rf '$work'" EXIT

  # -- 1. the Python package ------------------------------------------------------------
  local tools="$cache/release-venv-build-$BUILD_VERSION-twine-$TWINE_VERSION"
  if [ ! -e "$tools/.complete" ]; then
    say "installing build $BUILD_VERSION and twine $TWINE_VERSION into $tools"
    rm -rf "$tools"
    python3 -m venv "$tools"
    "$tools/bin/pip" install --quiet --disable-pip-version-check "build==$BUILD_VERSION" \
      "twine==$TWINE_VERSION"
    touch "$tools/.complete"
  fi
  say "building the wheel and the sdist"
  # Files dated by the last commit, not by when this ran: the same commit, the same bytes.
  SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct)
  export SOURCE_DATE_EPOCH
  # From a copy of what git tracks: the build never sees untracked or ignored files.
  git -C "$root" ls-files -z --cached --others --exclude-standard |
    (cd "$root" && xargs -0 tar -cf - --no-recursion) | tar -C "$work" --one-top-level=src -xf -
  "$tools/bin/python" -m build --sdist --wheel --outdir "$out/dist" "$work/src" >"$work/build.log" 2>&1 ||
    { tail -30 "$work/build.log" >&2; say "error: python -m build failed (above)"; exit 1; }
  "$tools/bin/twine" check --strict "$out/dist"/* >&2

  # -- 2. the images --------------------------------------------------------------------
  local name ref folder tag dest digest
  while read -r name ref folder; do
    tag=${ref##*:}
    dest="$registry/fedkube/$name"
    say "pushing $dest:$tag"
    skopeo copy --quiet --preserve-digests --dest-tls-verify="$tls" \
      --digestfile "$work/$name.digest" "oci:$folder/oci:$tag" "docker://$dest:$tag" >&2
    digest=$(cat "$work/$name.digest")
    say "signing $dest@$digest and attaching its SBOM"
    "${cosign_sign[@]}" "$dest@$digest" >&2 2>"$work/sign.log" ||
      { cat "$work/sign.log" >&2; exit 1; }
    "$bin/cosign" attest --key "$key" --tlog-upload=false "${cosign_http[@]}" --yes \
      --type cyclonedx --predicate "$folder/sbom.cdx.json" "$dest@$digest" >"$work/attest.log" 2>&1 ||
      { cat "$work/attest.log" >&2; exit 1; }
    cp "$folder/sbom.cdx.json" "$out/sbom/$name-$tag.cdx.json"
    printf '%s %s %s sbom/%s\n' "$name" "$dest:$tag" "$digest" "$name-$tag.cdx.json" >>"$work/images"
  done < <(bash "$root/tests/tools/build-images.sh")

  # -- 3. the chart ---------------------------------------------------------------------
  say "packaging and pushing the chart"
  "$bin/helm" package "$root/helm/fedkube" --destination "$out/chart" >&2
  "$bin/helm" push "$out/chart/fedkube-$version.tgz" "oci://$registry/charts" "${http[@]}" \
    >"$work/push.log" 2>&1 || { cat "$work/push.log" >&2; exit 1; }
  digest=$(sed -nE 's/^Digest: (sha256:[0-9a-f]{64})$/\1/p' "$work/push.log")
  [ -n "$digest" ] || { cat "$work/push.log" >&2; say "error: helm push printed no digest"; exit 1; }
  "${cosign_sign[@]}" "$registry/charts/fedkube@$digest" >&2 2>"$work/sign.log" ||
    { cat "$work/sign.log" >&2; exit 1; }

  # -- 4. what was released -------------------------------------------------------------
  cp "${key%.key}.pub" "$out/cosign.pub"
  python3 - "$out" "$version" "$work/images" "$registry/charts/fedkube" "$digest" <<'EOF'
import hashlib, json, sys
from pathlib import Path
out, version, pushed, chart, digest = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), sys.argv[4], sys.argv[5]
def sha(p): return hashlib.sha256(p.read_bytes()).hexdigest()
images = {
    name: {"reference": ref, "digest": image_digest, "sbom": sbom}
    for name, ref, image_digest, sbom in (line.split() for line in pushed.read_text().splitlines())
}
release = {
    "version": version,
    "python": {p.name: {"path": f"dist/{p.name}", "sha256": sha(p)} for p in sorted((out / "dist").iterdir())},
    "images": images,
    "chart": {"reference": f"oci://{chart}", "version": version, "digest": digest,
              "package": f"chart/fedkube-{version}.tgz"},
    "publicKey": "cosign.pub",
}
(out / "release.json").write_text(json.dumps(release, indent=2) + "\n")
EOF
  say "released fedkube $version to $registry; what was made is in $out/release.json"
  echo "$out/release.json"
}

main "$@"
