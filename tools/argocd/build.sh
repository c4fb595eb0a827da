#!/usr/bin/env bash
# Builds Argo CD (one binary that serves every role: argocd-application-controller,
# argocd-repo-server, ...) and the kustomize release its repo server runs, from their Go
# modules (pinned below), and prints, as the last line on stdout, the directory holding
#   bin/argocd bin/argocd-application-controller bin/argocd-repo-server bin/kustomize
#   bin/git-verify-wrapper.sh bin/gpg-wrapper.sh crds/*.yaml
# The role links are symbolic links to bin/argocd (Argo CD picks its role from the name it is
# started by). The CRDs are Argo CD's own (manifests/crds of the same module version).
# Everything else (progress, warnings) goes to stderr.
#
# Go: Argo CD v3.6 needs Go 1.27; the go command fetches that toolchain from the Go module
# proxy like any module (GOTOOLCHAIN below, for these builds only).
#
# Cache:  ${HIBERNATOR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator}/argocd-tools/<key>
#         <key> hashes this script (which pins the versions). A finished build is marked by
#         <key>/.complete (written last) and is reused as is.
#
# Why not `go install module@version`: Argo CD replaces its gitops-engine module with the
# directory `./gitops-engine`, and `go install` refuses a module with replace directives. The
# module zip leaves that nested module out, so it is fetched on its own (same version) and put
# where the replace directive looks; go.sum verifies everything else unchanged. The web UI is
# not built (its embedded directory holds the placeholder the module ships): the tests use no
# UI.
set -euo pipefail

ARGOCD=v3.6.2
# Argo CD v3.6.2 ships kustomize v5.8.3, whose kube-openapi requirement the Go module proxy did
# not serve when this was pinned; v5.8.1 builds the same kustomization files.
KUSTOMIZE=v5.8.1
export GOTOOLCHAIN=go1.27.3

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${HIBERNATOR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator}/argocd-tools"

log() { printf '[argocd-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not installed (needed to build Argo CD)"

key="$( { go env GOOS GOARCH; sha256sum "$here/build.sh"; } | sha256sum | cut -c1-16)"
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

module_dir() {
  local dir
  dir="$(go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" && -d "$dir" ]] || die "go mod download $1 gave no directory"
  printf '%s\n' "$dir"
}

log "building argocd $ARGOCD (several minutes on two cores)"
src="$work/argo-cd"
cp -r "$(module_dir "github.com/argoproj/argo-cd/v3@$ARGOCD")" "$src"
chmod -R u+w "$src"
rm -rf "$src/gitops-engine"
cp -r "$(module_dir "github.com/argoproj/argo-cd/gitops-engine/v3@$ARGOCD")" "$src/gitops-engine"
chmod -R u+w "$src/gitops-engine"
(
  cd "$src"
  CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
    -ldflags "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD#v}" \
    -o "$out/bin/argocd" ./cmd
)
for role in argocd-application-controller argocd-repo-server; do
  ln -sf argocd "$out/bin/$role"
done
# The scripts Argo CD's image puts beside the binary: the repo server runs git-verify-wrapper.sh
# on every revision it generates manifests for.
install -m 0755 "$src/hack/git-verify-wrapper.sh" "$src/hack/gpg-wrapper.sh" "$out/bin/"
cp "$src"/manifests/crds/application-crd.yaml "$src"/manifests/crds/appproject-crd.yaml "$out/crds/"

log "building kustomize $KUSTOMIZE"
CGO_ENABLED=0 GOBIN="$out/bin" go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE"

touch "$out/.complete"
log "built into $out"
printf '%s\n' "$out"
