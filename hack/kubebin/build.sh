#!/usr/bin/env bash
# Build the pinned control-plane binaries that the cluster test tier runs:
# kube-apiserver, kube-controller-manager, etcd and helm.
#
# Why: the machines we test on have no Docker (so no kind/k3d) and no internet
# beyond package registries, but they have Go and the Go module proxy. Every
# binary here is compiled from source fetched through the proxy, into a cache
# shared by all clones on the machine, so the (slow, 10-20 minute) build of
# kube-apiserver happens once per version set, not once per test run.
#
# Usage:   BIN=$(hack/kubebin/build.sh | tail -1)
# Output:  progress on stderr; the bin dir is the last line of stdout.
# Cache:   ${PROMPTCACHE_KUBEBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promptcache/kubebin}/<key>/
# Idempotent: when the four binaries and the stamp file exist, it prints the
# dir and exits without touching Go.
set -euo pipefail

# ---- pinned versions: change them here (and in the wrapper go.mod files) ----
KUBE_VERSION=v1.34.4   # k8s.io/kubernetes; its staging modules are v0.34.4 (hack/kubebin/kube/go.mod)
ETCD_VERSION=v3.6.8    # go.etcd.io/etcd/server/v3 (hack/kubebin/etcd/go.mod); k8s wants >= 3.5.13
HELM_VERSION=v3.19.5   # helm.sh/helm/v3, built with `go install`
# -----------------------------------------------------------------------------

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
binaries=(kube-apiserver kube-controller-manager etcd helm)

log() { printf 'kubebin: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The key names the versions and hashes the wrapper modules, so an edit of a
# go.mod/go.sum lands in a fresh directory instead of reusing stale binaries.
wrapper_files=(
  "$here/kube/go.mod" "$here/kube/go.sum"
  "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/etcd/main.go"
)
for f in "${wrapper_files[@]}"; do
  [[ -f $f ]] || die "missing $f"
done
wrapper_hash=$(cat "${wrapper_files[@]}" | sha256sum | cut -c1-10)
key="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_$(uname -s)-$(uname -m)_${wrapper_hash}"
cache_root=${PROMPTCACHE_KUBEBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promptcache/kubebin}
# shellcheck source=hack/lib/bincache.sh
source "$here/../lib/bincache.sh"
bincache_open "$cache_root" "$key" "${binaries[@]}"

command -v go >/dev/null 2>&1 || die "go is not on PATH; Go >= 1.24 is needed to build the control plane"

# The pins above must agree with the wrapper modules.
kube_minor_patch=${KUBE_VERSION#v1.}
grep -Eq "^(require)?[[:space:]]*k8s\.io/kubernetes ${KUBE_VERSION}( |\$)" "$here/kube/go.mod" ||
  die "hack/kubebin/kube/go.mod does not require k8s.io/kubernetes ${KUBE_VERSION}"
if grep -E '^[[:space:]]+k8s\.io/[^ ]+ => k8s\.io/[^ ]+ v' "$here/kube/go.mod" | grep -vq " v0\.${kube_minor_patch}\$"; then
  die "hack/kubebin/kube/go.mod has a staging replace that is not v0.${kube_minor_patch}"
fi
grep -Eq "^(require)?[[:space:]]*go\.etcd\.io/etcd/server/v3 ${ETCD_VERSION}( |\$)" "$here/etcd/go.mod" ||
  die "hack/kubebin/etcd/go.mod does not require go.etcd.io/etcd/server/v3 ${ETCD_VERSION}"

export CGO_ENABLED=0
export GOFLAGS=-mod=mod
export GOWORK=off

bincache_tmp

# Binaries are linked into tmp_dir and moved into place only when complete.
install_bin() { mv -f "$tmp_dir/$1" "$bin_dir/$1"; }

kube_major=${KUBE_VERSION#v}; kube_major=${kube_major%%.*}
kube_minor=${kube_minor_patch%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X $pkg.gitVersion=${KUBE_VERSION}"
  kube_ldflags+=" -X $pkg.gitMajor=${kube_major} -X $pkg.gitMinor=${kube_minor}"
  kube_ldflags+=" -X $pkg.gitTreeState=clean"
done

start_all=$SECONDS
for cmd in kube-apiserver kube-controller-manager; do
  if [[ -x $bin_dir/$cmd ]]; then
    log "$cmd already built"
    continue
  fi
  log "building $cmd ${KUBE_VERSION} (minutes: kube-apiserver alone takes 5-15 on 2 cores)"
  t0=$SECONDS
  (cd "$here/kube" && go build -trimpath -ldflags="$kube_ldflags" -o "$tmp_dir/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  install_bin "$cmd"
  log "built $cmd in $((SECONDS - t0))s"
done

if [[ ! -x $bin_dir/etcd ]]; then
  log "building etcd ${ETCD_VERSION}"
  t0=$SECONDS
  (cd "$here/etcd" && go build -trimpath -ldflags="-s -w" -o "$tmp_dir/etcd" .)
  install_bin etcd
  log "built etcd in $((SECONDS - t0))s"
fi

if [[ ! -x $bin_dir/helm ]]; then
  log "building helm ${HELM_VERSION}"
  t0=$SECONDS
  # Same -X flags as helm's Makefile: without the k8sVersion ones, `helm
  # template` assumes Kubernetes v1.20 for .Capabilities.KubeVersion.
  # helm's Makefile derives them from its client-go (v0.34.x in helm v3.19.x).
  helm_k8s_major=1
  helm_k8s_minor=34
  helm_ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  helm_ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_ldflags+=" -X $pkg.k8sVersionMajor=${helm_k8s_major} -X $pkg.k8sVersionMinor=${helm_k8s_minor}"
  done
  (cd "$tmp_dir" && GOBIN="$tmp_dir" go install -trimpath -ldflags="$helm_ldflags" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}")
  install_bin helm
  log "built helm in $((SECONDS - t0))s"
fi

log "done in $((SECONDS - start_all))s"
bincache_close "kube ${KUBE_VERSION}" "etcd ${ETCD_VERSION}" "helm ${HELM_VERSION}" \
  "go $(go env GOVERSION)" "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start_all))s"
