#!/usr/bin/env bash
# B1, the isolation step (BENCHMARKS.md): runs the test b1::isolation_step of tests/privileged.rs in
# the sandbox of tests/privileged.sh and makes its table with tests/e2e/bench-stats.py. It asserts
# nothing about time; it fails if the test fails or a sample is missing.
#
# B1_STATE=disk (the default) puts the agent's durable records (/var/lib/nm-vpn-netns) and
# /etc/netns on a disk, as on a real machine: a fresh directory under /var/tmp, bind-mounted into
# the sandbox (privileged.sh's PRIVILEGED_STATE_DIR) and removed after. The sandbox's own tmpfs
# ignores fsync, so only a disk counts the agent's synced writes; B1_STATE=tmpfs leaves them on
# the tmpfs, to see the rest alone.
#
# Usage, as root:  [B1_ROUNDS=30] [PROFILE=release] [B1_STATE=disk|tmpfs] bash tests/bench-isolate.sh
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${B1_ROUNDS:-30}
export B1_ROUNDS=$rounds
out=$(mktemp)
state=
trap 'rm -f "$out"; [[ -z $state ]] || rm -rf -- "$state"' EXIT
case ${B1_STATE:-disk} in
disk)
    state=$(mktemp -d /var/tmp/nm-vpn-netns-b1.XXXXXX)
    fs=$(stat -f -c %T "$state")
    if [[ $fs == tmpfs ]]; then
        echo "bench-isolate: /var/tmp is on tmpfs here, not a disk; use B1_STATE=tmpfs" >&2
        exit 1
    fi
    mkdir -m 700 "$state/records"
    mkdir -m 755 "$state/etc-netns"
    export PRIVILEGED_STATE_DIR=$state
    echo "bench-isolate: /var/lib/nm-vpn-netns and /etc/netns on $fs, under $state" >&2
    ;;
tmpfs) ;;
*)
    echo "bench-isolate: B1_STATE: expected disk or tmpfs, got ${B1_STATE}" >&2
    exit 1
    ;;
esac
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
python3 tests/e2e/bench-stats.py --title "B1, the isolation step (state on ${B1_STATE:-disk})" \
    --diff ours-floor --diff baseline-floor --ratio baseline-floor/ours-floor \
    --diff ours_less_move-floor_less_move --ratio baseline-floor/ours_less_move-floor_less_move <<<"$samples"
