# Shared by hack/kubebin/build.sh and hack/scanners/build.sh (sourced, not run): the
# per-machine cache of binaries built from the Go module proxy. One directory per key
# (versions + wrapper hashes), a stamp file written last, a lock so that parallel test
# sessions and several clones build once, and a temporary directory binaries are linked
# into before they move into place.
#
# The caller defines log() and die(), then:
#   bincache_open CACHE_ROOT KEY BINARY...   # sets bin_dir, stamp; prints bin_dir and exits 0
#                                            # when the binaries are already there
#   bincache_tmp                             # sets tmp_dir (removed on exit)
#   bincache_close LINE...                   # checks the binaries, writes the stamp, prints bin_dir

bincache_complete() {
  [[ -f $stamp ]] || return 1
  local b
  for b in "${bincache_binaries[@]}"; do
    [[ -x $bin_dir/$b ]] || return 1
  done
}

bincache_open() {
  local root=$1 key=$2
  shift 2
  bincache_binaries=("$@")
  bin_dir="$root/$key"
  stamp="$bin_dir/.build-complete"
  if bincache_complete; then
    echo "$bin_dir"
    exit 0
  fi
  mkdir -p "$bin_dir"
  # Serialize concurrent builds (parallel test sessions, several clones).
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$root/.lock-$key"
    if ! flock -n 9; then
      log "another build holds $root/.lock-$key; waiting"
      flock 9
    fi
    if bincache_complete; then
      echo "$bin_dir"
      exit 0
    fi
  fi
}

bincache_tmp() {
  rm -f "$stamp"
  tmp_dir=$(mktemp -d "$bin_dir/.tmp.XXXXXX")
  trap 'rm -rf "$tmp_dir"' EXIT
}

bincache_close() {
  local b line
  for b in "${bincache_binaries[@]}"; do
    [[ -x $bin_dir/$b ]] || die "$b missing after build"
  done
  for line in "$@"; do
    echo "$line"
  done >"$stamp"
  echo "$bin_dir"
}
