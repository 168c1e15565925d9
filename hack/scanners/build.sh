#!/usr/bin/env bash
# Build the pinned scanner binaries the chart tests run: promtool and kube-score.
#
# Why: `make test` checks the chart's PrometheusRule with promtool (check rules +
# unit tests of every alert) and scores the rendered manifests with kube-score. Both
# are Go programs; like hack/kubebin/build.sh, they are compiled from the Go module
# proxy (no prebuilt binary is downloaded) into a per-machine cache with its own key,
# so the build happens once per version set.
#
# Usage:   BIN=$(hack/scanners/build.sh | tail -1)
# Output:  progress on stderr; the bin dir is the last line of stdout.
# Cache:   ${PROMPTCACHE_SCANNERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promptcache/scanners}/<key>/
# Fails (exit 1) when a binary cannot be built: the tests need them, nothing is skipped.
set -euo pipefail

# ---- pinned versions --------------------------------------------------------
# Prometheus tags its Go module v0.<minor><patch>.x for release v3.<minor>.x.
PROMETHEUS_VERSION=v0.307.3   # github.com/prometheus/prometheus (Prometheus v3.7.3)
PROMETHEUS_RELEASE=3.7.3
KUBE_SCORE_VERSION=v1.20.0    # github.com/zegl/kube-score
# -----------------------------------------------------------------------------

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
binaries=(promtool kube-score)
log() { printf 'scanners: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The key also hashes the wrapper module, so an edit of its go.mod/go.sum builds afresh.
wrapper_hash=$(cat "$here/promtool/go.mod" "$here/promtool/go.sum" | sha256sum | cut -c1-10)
key="prometheus-${PROMETHEUS_VERSION}_kube-score-${KUBE_SCORE_VERSION}_$(uname -s)-$(uname -m)_${wrapper_hash}"
cache_root=${PROMPTCACHE_SCANNERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/promptcache/scanners}
# shellcheck source=hack/lib/bincache.sh
source "$here/../lib/bincache.sh"
bincache_open "$cache_root" "$key" "${binaries[@]}"
command -v go >/dev/null 2>&1 || die "go is not on PATH; Go >= 1.24 is needed to build promtool and kube-score"

export CGO_ENABLED=0 GOFLAGS=-mod=mod GOWORK=off
bincache_tmp
start_all=$SECONDS

grep -Eq "^require github\.com/prometheus/prometheus ${PROMETHEUS_VERSION}\$" "$here/promtool/go.mod" ||
  die "hack/scanners/promtool/go.mod does not require prometheus ${PROMETHEUS_VERSION}"

build() {  # name, how (wrapper|install), package, extra ldflags
  local name=$1 how=$2 pkg=$3 ldflags=$4 t0=$SECONDS
  if [[ -x $bin_dir/$name ]]; then
    log "$name already built"
    return
  fi
  log "building $name ($pkg; promtool takes ~20 minutes on 2 cores)"
  if [[ $how == wrapper ]]; then
    (cd "$here/$name" && go build -trimpath -ldflags="-s -w $ldflags" -o "$tmp_dir/$name" "$pkg") ||
      die "building $name failed"
  else
    (cd "$tmp_dir" && GOBIN="$tmp_dir" go install -trimpath -ldflags="-s -w $ldflags" "$pkg") ||
      die "building $name failed"
  fi
  mv -f "$tmp_dir/$name" "$bin_dir/$name"
  log "built $name in $((SECONDS - t0))s"
}

# promtool: Prometheus's go.mod has exclude directives, so `go install` refuses it; it is
# built from a wrapper module (hack/scanners/promtool) instead. kube-score installs as is.
build promtool wrapper github.com/prometheus/prometheus/cmd/promtool \
  "-X github.com/prometheus/common/version.Version=${PROMETHEUS_RELEASE}"
build kube-score install "github.com/zegl/kube-score/cmd/kube-score@${KUBE_SCORE_VERSION}" \
  "-X main.version=${KUBE_SCORE_VERSION}"

log "done in $((SECONDS - start_all))s"
bincache_close "prometheus ${PROMETHEUS_VERSION}" "kube-score ${KUBE_SCORE_VERSION}" \
  "go $(go env GOVERSION)" "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start_all))s"
