#!/usr/bin/env bash
# Mutation testing of palisade's core modules with cargo-mutants: each
# mutant (an operator flipped, a body replaced by a default, a guard
# removed) must make at least one test fail. Not part of CI: it builds and
# runs the tests once per mutant, which takes hours on two cores.
#
#   scripts/mutants.sh                 # every core module
#   scripts/mutants.sh hint window     # only these (names below)
#
# MUTANTS_ARGS is passed on to cargo-mutants (for example "--in-place" in
# a scratch clone whose target/ is already built, which saves the copy and
# the first full build). The results go to mutants.out/<module>/ (outcomes.json, caught.txt,
# missed.txt, unviable.txt, timeout.txt); TESTING.md reports them.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-mutants >/dev/null 2>&1 || cargo install cargo-mutants --locked

# module name | files (space-separated) | the test targets that exercise it
modules=(
  "state|src/circuit_breaker/state.rs src/circuit_breaker/word.rs src/circuit_breaker/metrics.rs|--lib --test circuit_breaker --test circuit_breaker_model --test breaker_concurrency"
  "window|src/window/count.rs src/window/time.rs src/circuit_breaker/window.rs|--lib --test circuit_breaker --test circuit_breaker_model"
  "semaphore|src/semaphore.rs|--lib --test bulkhead --test cancellation"
  "budget|src/budget.rs|--lib --test retry --test retry_budget"
  "retry_future|src/retry/future.rs|--lib --test retry --test stack"
  "replay|src/replay/body.rs src/replay/mod.rs|--lib --test retry --test wire_http"
  "http|src/classify/http.rs|--lib --test retry"
  "grpc|src/classify/grpc.rs|--lib --test retry --test grpc_eos"
  "hint|src/classify/hint.rs|--lib --test retry"
  "respond|src/respond/mod.rs src/respond/grpc.rs src/respond/http.rs|--lib --test respond --test grpc_tonic"
  "middleware|src/middleware.rs|--test reqwest_middleware"
  "preset|src/preset/mod.rs src/preset/part.rs src/preset/standard.rs|--lib --test preset --test stack --test grpc_tonic --test docs_client"
  "rate_limit|src/rate_limit/gcra.rs src/rate_limit/future.rs src/rate_limit/layer.rs src/rate_limit/mod.rs src/rate_limit/event.rs|--lib --test rate_limit"
  "registry|src/registry/mod.rs src/registry/ejection.rs|--lib --test ejection --test metrics_table --test docs_keyed"
  "eject|src/circuit_breaker/eject.rs|--lib --test ejection --test docs_keyed"
  "adaptive_algorithms|src/adaptive/algorithm/mod.rs src/adaptive/algorithm/aimd.rs src/adaptive/algorithm/vegas.rs src/adaptive/algorithm/gradient.rs|--test adaptive"
  "adaptive_limit|src/adaptive/limit/learn.rs src/adaptive/limit/layer.rs src/adaptive/limit/future.rs src/adaptive/limit/mod.rs src/adaptive/limit/event.rs|--test adaptive --test adaptive_stress --test grpc_eos --test observability"
  "throttle|src/adaptive/throttle/layer.rs src/adaptive/throttle/future.rs src/adaptive/throttle/mod.rs src/adaptive/throttle/event.rs|--test adaptive --test adaptive_stress --test grpc_eos --test observability"
  "config|src/config/document.rs src/config/stack.rs src/config/slot.rs src/config/mod.rs src/settings/mod.rs src/settings/duration.rs|--lib --test config --test docs_config"
  "settings|src/backoff/settings.rs src/budget.rs src/circuit_breaker/settings.rs src/retry/settings.rs src/timeout/settings.rs src/bulkhead/settings.rs src/rate_limit/settings.rs src/hedge/settings.rs src/adaptive/limit/settings.rs src/adaptive/throttle/settings.rs|--lib --test config --test docs_config"
  "keyed|src/keyed/mod.rs src/keyed/layer.rs src/keyed/key.rs src/keyed/future.rs src/keyed/handle.rs src/keyed/event.rs|--lib --test keyed --test observability --test docs_keyed --test ejection -- --skip a_million"
)

# The modules asked for, in the order asked; all of them by default.
wanted=("$@")
if [ ${#wanted[@]} -eq 0 ]; then
  for entry in "${modules[@]}"; do wanted+=("${entry%%|*}"); done
fi
for want in "${wanted[@]}"; do
  entry=""
  for candidate in "${modules[@]}"; do
    [ "${candidate%%|*}" = "$want" ] && entry=$candidate
  done
  [ -n "$entry" ] || { echo "no module named $want" >&2; exit 2; }
  IFS='|' read -r name files tests <<<"$entry"
  echo "==> $name ($files)"
  mkdir -p "mutants.out/$name"
  file_args=()
  for f in $files; do file_args+=(--file "$f"); done
  # shellcheck disable=SC2086
  cargo mutants --all-features --no-shuffle "${file_args[@]}" ${MUTANTS_ARGS:-} \
    --output "mutants.out/$name" -- $tests || true
  for kind in caught missed unviable timeout; do
    f="mutants.out/$name/mutants.out/$kind.txt"
    [ -f "$f" ] && printf '%-9s %s\n' "$kind" "$(wc -l <"$f")"
  done
done
