#!/usr/bin/env bash
# The contention bench run R times (default 3), since on a shared 2-core VM
# one run's T = 2 figure can differ from the next run's by 4x: prints each
# run's time per call at T = 1, 2, 4 and 8 tasks with T2/T1, then each
# row's smallest and largest T2/T1 over the runs.
#
#   scripts/contention.sh                 # every group, 3 runs
#   R=5 scripts/contention.sh "floor|bulkhead"
set -euo pipefail
cd "$(dirname "$0")/.."
R=${R:-3}
filter=${1:-}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for run in $(seq 1 "$R"); do
  # Criterion prints the id, then "time: [low median high]" on the same
  # line or the next; the median is kept, in nanoseconds.
  cargo bench -q -p palisade-peers --bench contention -- ${filter:+"$filter"} 2>/dev/null \
    | awk -v run="$run" '
        /^contention\// { id = $0; sub(/ +time:.*/, "", id) }
        /time:/ {
          line = $0; sub(/.*\[/, "", line); split(line, f, " ")
          ns = f[3]; unit = f[4]
          if (unit == "ps") ns /= 1000; else if (unit == "µs" || unit == "us") ns *= 1000; else if (unit == "ms") ns *= 1000000
          n = split(id, p, "/"); tasks = p[n]; row = id; sub(/\/[0-9]+$/, "", row)
          printf "%s\t%s\t%s\t%.2f\n", run, row, tasks, ns
        }' >>"$out"
done
awk -F'\t' '
  { t[$1 FS $2 FS $3] = $4; if (!seen[$2]++) rows[++nrows] = $2; runs[$1] = 1 }
  END {
    for (r = 1; r in runs; r++) {
      printf "run %d\n%-60s %10s %10s %10s %10s %8s\n", r, "row", "T=1", "T=2", "T=4", "T=8", "T2/T1"
      for (i = 1; i <= nrows; i++) {
        k = r FS rows[i]; ratio = t[k FS 2] / t[k FS 1]
        printf "%-60s %10.2f %10.2f %10.2f %10.2f %8.2f\n", rows[i], t[k FS 1], t[k FS 2], t[k FS 4], t[k FS 8], ratio
        if (!(rows[i] in lo) || ratio < lo[rows[i]]) lo[rows[i]] = ratio
        if (!(rows[i] in hi) || ratio > hi[rows[i]]) hi[rows[i]] = ratio
      }
      print ""
    }
    printf "T2/T1 over the runs\n%-60s %8s %8s\n", "row", "least", "most"
    for (i = 1; i <= nrows; i++) printf "%-60s %8.2f %8.2f\n", rows[i], lo[rows[i]], hi[rows[i]]
  }' "$out"
