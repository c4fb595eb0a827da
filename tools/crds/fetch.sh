#!/usr/bin/env bash
# Fetches the real CustomResourceDefinitions of Flux (Kustomization, HelmRelease), Argo CD
# (Application), Argo Rollouts (Rollout) and KEDA (ScaledObject) for the tests, and prints, as
# the last line on stdout, the directory holding them as <plural>.<group>.yaml files plus a
# VERSIONS file. Everything else (progress, errors) goes to stderr.
#
# Source: the Go module proxy. Each of these projects is a Go module whose module zip holds its
# CRD manifests, and the proxy serves those zips over HTTPS, so no Git host or release download
# site is needed. Each zip is checked against the SHA-256 pinned below before anything is taken
# from it. helm-controller is pinned at v1.3.0 because, at the time of pinning, the proxy did not
# serve newer versions of its root module.
#
# Proxy:  the first entry of ${GOPROXY:-https://proxy.golang.org} (entries are separated by "," or
#         "|"); "direct" or "off" there is an error, since this script needs a proxy.
# Cache:  ${HIBERNATOR_CRDS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator/crds}/<key>
#         <key> is the first 16 hex digits of the SHA-256 of this script, so changing a pin
#         fetches into a fresh directory. A finished fetch is marked by <key>/.complete (written
#         last) and is reused as is; a run that finds it returns without touching the network.
set -euo pipefail

script="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
cache_root="${HIBERNATOR_CRDS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator/crds}"

log() { printf '[crds] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Pinned CRDs: module, version, SHA-256 of the module zip, path inside the zip, output file.
pins=(
  "github.com/fluxcd/kustomize-controller v1.10.1 8725ec07d6931eb1bb860de3a8544277b4c133a2ecde63166891e4305e173616 github.com/fluxcd/kustomize-controller@v1.10.1/config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml kustomizations.kustomize.toolkit.fluxcd.io.yaml"
  "github.com/fluxcd/helm-controller v1.3.0 62dac2b373995c67e446b2800184dd22bd679a34a554dd2f310af4b1c79a5ac4 github.com/fluxcd/helm-controller@v1.3.0/config/crd/bases/helm.toolkit.fluxcd.io_helmreleases.yaml helmreleases.helm.toolkit.fluxcd.io.yaml"
  "github.com/argoproj/argo-cd/v3 v3.6.2 293c3849e19b57d5c753a093796b925f042083ed2f0c81aafa58e928d3a20229 github.com/argoproj/argo-cd/v3@v3.6.2/manifests/crds/application-crd.yaml applications.argoproj.io.yaml"
  "github.com/argoproj/argo-rollouts v1.10.2 dc4ddb140e7d043e8cc13b97d53cfa1726ecd9472d636c41da2a2961edb0b71e github.com/argoproj/argo-rollouts@v1.10.2/manifests/crds/rollout-crd.yaml rollouts.argoproj.io.yaml"
  "github.com/kedacore/keda/v2 v2.21.1 872fa4b9d4282969ece753727ca31a7a31eaf341a52fa0972148297521ca9a75 github.com/kedacore/keda/v2@v2.21.1/config/crd/bases/keda.sh_scaledobjects.yaml scaledobjects.keda.sh.yaml"
)

# --- cache -------------------------------------------------------------------
key="$(sha256sum "$script" | cut -c1-16)"
out="$cache_root/$key"

if [[ -f "$out/.complete" ]]; then
  log "reusing $out"
  printf '%s\n' "$out"
  exit 0
fi

for program in curl python3 sha256sum flock; do
  command -v "$program" >/dev/null || die "$program is not installed (needed to fetch the CRDs)"
done

# --- proxy -------------------------------------------------------------------
proxy="${GOPROXY:-https://proxy.golang.org}"
proxy="${proxy%%[,|]*}"
proxy="${proxy%/}"
case "$proxy" in
  direct | off | "")
    die "GOPROXY=${GOPROXY:-} starts with '${proxy:-<empty>}'; this script downloads module zips from a module proxy, so the first GOPROXY entry must be a proxy URL (for example https://proxy.golang.org)"
    ;;
esac

# escape STRING: a module path or version as the proxy protocol spells it (each upper-case
# letter becomes "!" followed by its lower-case form).
escape() {
  local in="$1" outs="" c i
  for ((i = 0; i < ${#in}; i++)); do
    c="${in:i:1}"
    if [[ "$c" == [A-Z] ]]; then
      outs+="!$(tr 'A-Z' 'a-z' <<<"$c")"
    else
      outs+="$c"
    fi
  done
  printf '%s' "$outs"
}

# --- fetch -------------------------------------------------------------------
mkdir -p "$out"
exec 9>"$out/.lock"
if ! flock -n 9; then
  log "another fetch of $key is running; waiting for it"
  flock 9
  if [[ -f "$out/.complete" ]]; then
    log "reusing $out"
    printf '%s\n' "$out"
    exit 0
  fi
fi

tmp="$(mktemp -d "$cache_root/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log "fetching ${#pins[@]} CRDs from $proxy into $out"
versions="$tmp/VERSIONS"
printf '# file\tmodule\tversion\tpath in the module zip (from %s)\n' "$proxy" >"$versions"
for pin in "${pins[@]}"; do
  read -r module version sum member file <<<"$pin"
  url="$proxy/$(escape "$module")/@v/$(escape "$version").zip"
  zip="$tmp/$file.zip"
  start=$SECONDS
  curl --fail --silent --show-error --location --retry 3 --connect-timeout 20 \
    --output "$zip" "$url" || die "downloading $module $version from $url failed"
  actual="$(sha256sum "$zip" | cut -d' ' -f1)"
  [[ "$actual" == "$sum" ]] \
    || die "$module $version: module zip has SHA-256 $actual, expected $sum ($url)"
  python3 -c '
import sys, zipfile
archive, member, target = sys.argv[1:4]
with zipfile.ZipFile(archive) as z:
    try:
        data = z.read(member)
    except KeyError:
        sys.exit(f"{member} is not in the module zip")
with open(target, "wb") as f:
    f.write(data)
' "$zip" "$member" "$tmp/$file" || die "$module $version: extracting $member failed"
  rm -f "$zip"
  printf '%s\t%s\t%s\t%s\n' "$file" "$module" "$version" "$member" >>"$versions"
  log "$file: $module $version ($((SECONDS - start))s)"
done

for pin in "${pins[@]}"; do
  read -r _ _ _ _ file <<<"$pin"
  mv -f "$tmp/$file" "$out/$file"
done
mv -f "$versions" "$out/VERSIONS"
date -u +%Y-%m-%dT%H:%M:%SZ >"$out/.complete"
log "ready: $out"
printf '%s\n' "$out"
