#!/usr/bin/env bash
# What a user gets from `pip install promptcache[demo]`: build the wheel, install it (not
# editable) into a fresh virtual environment with the pinned constraints, and run every
# command it ships from outside the source tree, so nothing is imported from the checkout.
#
# Checks: the wheel's top-level import names are only `promptcache` and
# `promptcache_operator` (no generic `sidecar`, `simulator`, `demo`, `bench`);
# `promptcache sidecar --help`, `promptcache operator --help`, `promptcache simulate --help`
# and `promptcache demo --short` succeed.
#
# Usage: hack/install-check.sh [PYTHON]   (default: python3). Exit status non-zero on failure.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${1:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { printf 'install-check: %s\n' "$*" >&2; }

log "building the wheel"
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" "$root" >/dev/null
wheel=$(ls "$work"/dist/promptcache-*.whl)

top=$("$python" - "$wheel" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    names = {n.split("/")[0] for n in z.namelist() if not n.split("/")[0].endswith((".dist-info", ".data"))}
print(" ".join(sorted(names)))
PY
)
log "top-level names in the wheel: $top"
if [[ $top != "promptcache promptcache_operator" ]]; then
  log "error: the wheel must hold only promptcache and promptcache_operator, found: $top"
  exit 1
fi

log "installing it with the demo extra into a fresh virtual environment"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null
"$work/venv/bin/python" -m pip install --quiet -c "$root/constraints.txt" "$wheel[demo]"

cd "$work"  # nothing importable from the checkout
for cmd in "sidecar --help" "operator --help" "simulate --help"; do
  log "promptcache $cmd"
  # shellcheck disable=SC2086
  "$work/venv/bin/promptcache" $cmd >/dev/null
done
log "promptcache demo --short"
"$work/venv/bin/promptcache" demo --short --out "$work/report" >"$work/demo.out" 2>&1 || {
  cat "$work/demo.out" >&2
  log "error: promptcache demo --short failed from the installed wheel"
  exit 1
}
tail -n 3 "$work/demo.out" >&2
log "ok: the installed wheel runs every command it ships"
