#!/usr/bin/env bash
# Instructions per call on the happy path, under valgrind (noise-free on a
# shared machine): each stack is driven with 0 and with N calls, and the
# difference is divided by N. Prints "stack  instructions/call  over bare".
#
#   scripts/instructions.sh            # every stack (each layer and each peer), N = 200000
#   N=50000 scripts/instructions.sh retry preset
#   CARGO_TARGET_DIR=/elsewhere scripts/instructions.sh rate-limit
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 2; }
N=${N:-200000}
stacks=("$@")
cargo bench -p palisade-peers --bench instructions --no-run >/dev/null 2>&1
bin=$( (ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/instructions-* 2>/dev/null || true) | grep -v '\.d$' | head -1)
[ -x "$bin" ] || { echo "the instructions bench did not build" >&2; exit 2; }
# Every stack the bench knows, palisade's layers and their peers, unless named.
[ ${#stacks[@]} -gt 0 ] || mapfile -t stacks < <("$bin" list)
irefs() {
  valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 \
    | awk '/I *refs:/ { gsub(",", "", $NF); print $NF }'
}
per_call() {
  local zero n
  zero=$(irefs "$1" 0)
  n=$(irefs "$1" "$N")
  echo $(( (n - zero) / N ))
}
bare=$(per_call bare)
for s in "${stacks[@]}"; do
  c=$(per_call "$s")
  printf '%-16s %6d  %+6d\n' "$s" "$c" $(( c - bare ))
done
