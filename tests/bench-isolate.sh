#!/usr/bin/env bash
# B1, the isolation step (BENCHMARKS.md): runs the test b1::isolation_step of tests/privileged.rs in
# the sandbox of tests/privileged.sh and makes its table with tests/e2e/bench-stats.py. It asserts
# nothing about time; it fails if the test fails or a sample is missing.
#
# Usage, as root:  [B1_ROUNDS=30] [PROFILE=release] bash tests/bench-isolate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${B1_ROUNDS:-30}
export B1_ROUNDS=$rounds
out=$(mktemp)
trap 'rm -f "$out"' EXIT
# libtest prints the test's output after it ends (privileged.sh passes --show-output), a failure's
# too, so everything is kept until the run has passed.
if ! bash tests/privileged.sh b1::isolation_step --exact >"$out"; then
    cat "$out" >&2
    exit 1
fi
labels=(ours baseline floor ours_less_move floor_less_move)
samples=$(grep -E "^($(IFS='|'; echo "${labels[*]}")) [0-9.]+\$" "$out" || true)
got=$(grep -c . <<<"$samples" || true)
if ((got != ${#labels[@]} * rounds)); then
    echo "bench-isolate: expected $((${#labels[@]} * rounds)) samples (${#labels[@]} per round), got $got; the test's output:" >&2
    cat "$out" >&2
    exit 1
fi
python3 tests/e2e/bench-stats.py --title "B1, the isolation step" \
    --diff ours-floor --diff baseline-floor --ratio baseline-floor/ours-floor \
    --diff ours_less_move-floor_less_move --ratio baseline-floor/ours_less_move-floor_less_move <<<"$samples"
