#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from their Go modules (pinned
# below) and prints, as the last line on stdout, the directory holding
#   bin/source-controller bin/kustomize-controller crds/*.yaml
# The CRDs are the controllers' own (config/crd/bases of the same module versions), so the
# API server serves exactly the schemas these builds read and write.
# Everything else (progress, warnings) goes to stderr.
#
# Cache:  ${HIBERNATOR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator}/flux-tools/<key>
#         <key> hashes this script (which pins the versions) and the Go version. A finished
#         build is marked by <key>/.complete (written last) and is reused as is.
#
# Why not `go install module@version`: both modules replace their own `api` module with the
# directory `./api`, and `go install` refuses a module with replace directives. The module
# zip leaves the nested `api` module out, so it is fetched on its own (same version, from the
# module proxy) and put where the replace directive looks; go.sum then verifies everything
# else unchanged.
set -euo pipefail

# source-controller stays at v1.9.3: v1.9.4 to v1.9.6 require versions of
# github.com/fluxcd/pkg/artifact that the Go module proxy did not serve when these were pinned.
SOURCE_CONTROLLER=v1.9.3
KUSTOMIZE_CONTROLLER=v1.9.6

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${HIBERNATOR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator}/flux-tools"

log() { printf '[flux-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not installed (needed to build the Flux controllers)"

key="$( { go env GOVERSION GOOS GOARCH; sha256sum "$here/build.sh"; } | sha256sum | cut -c1-16)"
out="$cache_root/$key"
if [[ -f "$out/.complete" ]]; then
  log "reusing $out"
  printf '%s\n' "$out"
  exit 0
fi

mkdir -p "$out/bin" "$out/crds"
exec 9>"$out/.lock"
if ! flock -n 9; then
  log "another build of $key is running; waiting for it"
  flock 9
fi
if [[ -f "$out/.complete" ]]; then
  printf '%s\n' "$out"
  exit 0
fi

work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# The module's source directory in the module cache (downloaded from the proxy if needed).
module_dir() {
  local dir
  dir="$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" && -d "$dir" ]] || die "go mod download $1 gave no directory"
  printf '%s\n' "$dir"
}

build() {
  local name="$1" module="$2" version="$3" src
  log "building $name $version (a few minutes on two cores)"
  src="$work/$name"
  cp -r "$(module_dir "$module@$version")" "$src"
  chmod -R u+w "$src"
  rm -rf "$src/api"
  cp -r "$(module_dir "$module/api@$version")" "$src/api"
  chmod -R u+w "$src/api"
  (
    cd "$src"
    CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
      -ldflags "-s -w -X main.VERSION=$version" -o "$out/bin/$name" .
  )
  cp "$src"/config/crd/bases/*.yaml "$out/crds/"
}

build source-controller github.com/fluxcd/source-controller "$SOURCE_CONTROLLER"
build kustomize-controller github.com/fluxcd/kustomize-controller "$KUSTOMIZE_CONTROLLER"

touch "$out/.complete"
log "built into $out"
printf '%s\n' "$out"
