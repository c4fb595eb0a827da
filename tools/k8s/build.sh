#!/usr/bin/env bash
# Builds the testbed's Kubernetes tools from the Go modules pinned in this
# directory and prints, as the last line on stdout, the directory holding them:
#   kube-apiserver kube-controller-manager kube-scheduler etcd helm kubeconform
# Everything else (progress, warnings) goes to stderr.
#
# Cache:  ${HIBERNATOR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator/k8s-tools}/<key>/bin
#         <key> hashes every go.mod, go.sum and .go file here, this script and
#         the Go version, so any version bump builds into a fresh directory.
#         A finished build is marked by <key>/.complete (written last) and is
#         reused as is; a run that finds it returns without calling the compiler.
#
# KUBEBUILDER_ASSETS: if it names a directory holding executable kube-apiserver
#         and etcd (standard envtest binaries), those two are not built. The
#         printed directory is then <key>/envtest-<hash of that path>/bin, whose
#         kube-apiserver and etcd are symlinks into KUBEBUILDER_ASSETS and whose
#         other tools are symlinks to the ones built here. Callers always take
#         every binary from the one printed directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${HIBERNATOR_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/hibernator/k8s-tools}"

log() { printf '[k8s-tools] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v go >/dev/null || die "go is not installed (needed to build the Kubernetes tools)"

# --- cache key -------------------------------------------------------------
key="$(
  cd "$here"
  {
    go env GOVERSION GOOS GOARCH
    find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) -print \
      | LC_ALL=C sort | xargs sha256sum
  } | sha256sum | cut -c1-16
)"
out="$cache_root/$key"
bin="$out/bin"

# --- optional envtest binaries ----------------------------------------------
assets=""
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  if [[ -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
    assets="$(cd "$KUBEBUILDER_ASSETS" && pwd -P)"
  else
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; building them"
  fi
fi
if [[ -n "$assets" ]]; then
  view="$out/envtest-$(printf '%s' "$assets" | sha256sum | cut -c1-12)"
  result="$view/bin"
  marker="$view/.complete"
else
  result="$bin"
  marker="$out/.complete"
fi

if [[ -f "$marker" ]]; then
  log "reusing $result"
  printf '%s\n' "$result"
  exit 0
fi

# --- build -------------------------------------------------------------------
mkdir -p "$bin"
exec 9>"$out/.lock"
if ! flock -n 9; then
  log "another build of $key is running; waiting for it"
  flock 9
fi

# Pinned versions, read from the module files so ldflags follow a bump.
modver() { (cd "$here/$1" && go list -m -f '{{.Version}}' "$2"); }
modtime() { (cd "$here/$1" && go list -m -f '{{with .Time}}{{.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' "$2"); }

k8s_version="$(modver . k8s.io/kubernetes)"
k8s_date="$(modtime . k8s.io/kubernetes)"
k8s_major="${k8s_version#v}"; k8s_major="${k8s_major%%.*}"
k8s_minor="${k8s_version#v*.}"; k8s_minor="${k8s_minor%%.*}"
etcd_version="$(modver . go.etcd.io/etcd/server/v3)"
helm_version="$(modver helm helm.sh/helm/v3)"
helm_k8s="$(modver helm k8s.io/client-go)"          # v0.<minor>.<patch>
helm_k8s_minor="${helm_k8s#v0.}"; helm_k8s_minor="${helm_k8s_minor%%.*}"
kubeconform_version="$(modver kubeconform github.com/yannh/kubeconform)"

k8s_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ldflags+=" -X '$pkg.gitVersion=$k8s_version'"
  k8s_ldflags+=" -X '$pkg.gitMajor=$k8s_major' -X '$pkg.gitMinor=$k8s_minor'"
  k8s_ldflags+=" -X '$pkg.gitCommit=' -X '$pkg.gitTreeState=clean'"
  k8s_ldflags+=" -X '$pkg.buildDate=$k8s_date'"
done
etcd_ldflags="-X 'go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_version'"
helm_ldflags="-X 'helm.sh/helm/v3/internal/version.version=$helm_version'"
helm_ldflags+=" -X 'helm.sh/helm/v3/internal/version.gitTreeState=clean'"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_ldflags+=" -X '$pkg.k8sVersionMajor=1' -X '$pkg.k8sVersionMinor=$helm_k8s_minor'"
done
kubeconform_ldflags="-X 'main.version=$kubeconform_version'"

# build NAME MODULE_DIR PACKAGE LDFLAGS: one binary, atomically renamed into place.
build() {
  local name="$1" dir="$2" pkg="$3" ldflags="$4"
  if [[ -x "$bin/$name" ]]; then
    log "$name: already built"
    return
  fi
  log "$name: building $pkg ..."
  local start=$SECONDS tmp="$bin/.$name.tmp.$$"
  (
    cd "$here/$dir"
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -mod=readonly \
      -ldflags="-s -w $ldflags" -o "$tmp" "$pkg"
  ) || { rm -f "$tmp"; die "building $name failed"; }
  mv -f "$tmp" "$bin/$name"
  log "$name: done in $((SECONDS - start))s"
}

log "cache $out (kubernetes $k8s_version, etcd $etcd_version, helm $helm_version, kubeconform $kubeconform_version)"
if [[ -z "$assets" ]]; then
  build kube-apiserver        . ./cmd/kube-apiserver          "$k8s_ldflags"
  build etcd                  . ./cmd/etcd                    "$etcd_ldflags"
fi
build kube-controller-manager . ./cmd/kube-controller-manager "$k8s_ldflags"
build kube-scheduler          . ./cmd/kube-scheduler          "$k8s_ldflags"
build helm                    helm helm.sh/helm/v3/cmd/helm   "$helm_ldflags"
build kubeconform             kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$kubeconform_ldflags"

if [[ -n "$assets" ]]; then
  env_version="$("$assets/kube-apiserver" --version 2>/dev/null | awk '{print $2}')" || true
  env_minor="${env_version#v*.}"; env_minor="${env_minor%%.*}"
  log "kube-apiserver and etcd from KUBEBUILDER_ASSETS=$assets (kube-apiserver ${env_version:-unknown})"
  if [[ "$env_minor" =~ ^[0-9]+$ ]] && (( env_minor < k8s_minor )); then
    log "warning: kube-controller-manager $k8s_version is newer than that kube-apiserver;" \
        "Kubernetes does not support that skew. Unset KUBEBUILDER_ASSETS to build a matching apiserver."
  fi
  mkdir -p "$view/bin"
  ln -sfn "$assets/kube-apiserver" "$view/bin/kube-apiserver"
  ln -sfn "$assets/etcd" "$view/bin/etcd"
  for name in kube-controller-manager kube-scheduler helm kubeconform; do
    ln -sfn "$bin/$name" "$view/bin/$name"
  done
else
  for name in kube-apiserver etcd kube-controller-manager kube-scheduler helm kubeconform; do
    [[ -x "$bin/$name" ]] || die "$name missing after build"
  done
fi
date -u +%Y-%m-%dT%H:%M:%SZ > "$marker"
log "ready: $result"
printf '%s\n' "$result"
