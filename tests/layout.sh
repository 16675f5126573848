#!/usr/bin/env bash
# Checks of the tree's shape that no compiler makes (run by `make lint`, and with --release-lib by
# `make check` after the release build):
# - no file under src/ has more than 600 lines of code before its first `#[cfg(test)]`;
# - nothing in the repository cites a file outside it;
# - with --release-lib: the release library contains no symbol of the recording fake, which is
#   compiled only for tests (`#[cfg(any(test, feature = "test-support"))]`).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
complain() {
    echo "layout: $*" >&2
    status=1
}

if [[ ${1:-} == --release-lib ]]; then
    rlib=$(ls -t target/release/deps/libnm_vpn_netns-*.rlib 2>/dev/null | head -1)
    [[ -n $rlib ]] || { complain "no release library; run 'make build' first"; exit 1; }
    fakes=$(nm -C "$rlib" 2>/dev/null | grep -c RecordingSys || true)
    [[ $fakes == 0 ]] || complain "$rlib holds $fakes symbols of RecordingSys; expected 0"
    echo "layout: $rlib holds no RecordingSys symbol"
    exit $status
fi

# A file that its parent module declares only under `#[cfg(test)]` (`mod tests;`) is test code.
test_only() {
    local dir name parent before
    dir=$(dirname "$1") name=$(basename "$1" .rs)
    for parent in "$dir/mod.rs" "$dir.rs" "$dir/lib.rs"; do
        [[ -f $parent ]] || continue
        before=$(grep -B1 -E "^\s*(pub(\(crate\))? )?mod $name;" "$parent" || true)
        [[ $before == *'#[cfg(test)]'* ]] && return 0
    done
    return 1
}

max=600
while IFS= read -r f; do
    test_only "$f" && continue
    n=$(awk '/^#\[cfg\(test\)\]/{exit} {n++} END{print n+0}' "$f")
    ((n <= max)) || complain "$f has $n lines of code before its tests; at most $max"
done < <(git ls-files 'src/*.rs' 'src/**/*.rs')

# The bracketed characters keep this pattern from matching its own line.
cites=$(git grep -nE 'DESIGN[.]md|E2E-NOTE[S]|[.][.]/shared' -- . ':!*.lock' || true)
[[ -z $cites ]] || complain "the repository cites files outside it:"$'\n'"$cites"

((status == 0)) && echo "layout: every src/ file has at most $max lines of code; no outside citations"
exit $status
