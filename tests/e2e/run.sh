#!/usr/bin/env bash
# End-to-end tests against the real NetworkManager, NetworkManager-openvpn and openvpn, and
# NetworkManager-openconnect against ocserv.
#
#   tests/e2e/run.sh [t_NAME|b_NAME ...]   (as root; default: every scenario in tests.sh;
#                                           b_NAME are the benchmarks in bench*.sh)
#
# The outer part runs in the machine's own namespaces and only reads them: it snapshots the machine's
# network state, re-runs itself under `unshare --net --mount`, and asserts the snapshot is unchanged.
# The inner part builds the rig (rig.sh), runs the scenarios and tears the rig down, even on failure.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)

# Only definitions: the outer part uses machine_snapshot, procs_with_arg and text_diff.
# shellcheck source=rig.sh
source "$here/rig.sh"

if [[ ${RIG_INSIDE:-} != 1 ]]; then
    [[ $EUID -eq 0 ]] || { echo "e2e: run as root (the rig creates namespaces)" >&2; exit 2; }
    before=$(machine_snapshot)
    results=$(mktemp /tmp/nm-vpn-netns-e2e-results.XXXXXX)
    RIG_TAG=$$ RIG_INSIDE=1 RIG_RESULTS=$results unshare --net --mount --propagation private -- bash "$0" "$@"
    after=$(machine_snapshot)
    # The sandbox's processes end with its PID namespace; the server side's must end by our hand.
    left=$(procs_with_arg "/tmp/nm-vpn-netns-rig.$$.")
    if [[ -z $left ]]; then
        echo "PASS t_no_process_left" | tee -a "$results"
        echo "  ok: no process of the rig outlives it"
    else
        echo "FAIL t_no_process_left" | tee -a "$results"
        echo "$left"
    fi
    if [[ $before == "$after" ]]; then
        echo "PASS t_machine_namespace_unchanged" | tee -a "$results"
        echo "  ok: the machine's links, addresses, routes, rules, netns and resolv.conf are byte-for-byte unchanged"
    else
        echo "FAIL t_machine_namespace_unchanged" | tee -a "$results"
        text_diff "$before" "$after"
    fi
    passed=$(grep -c '^PASS' "$results")
    failed=$(grep -c '^FAIL' "$results")
    rm -f "$results"
    echo
    echo "e2e: $passed passed, $failed failed"
    ((failed == 0 && passed > 1))
    exit
fi

# shellcheck source=tests.sh
source "$here/tests.sh"
# shellcheck source=tests-isolated.sh
source "$here/tests-isolated.sh"
# shellcheck source=tests-faults.sh
source "$here/tests-faults.sh"
# shellcheck source=tests-package.sh
source "$here/tests-package.sh"
# shellcheck source=tests-security.sh
source "$here/tests-security.sh"
# shellcheck source=tests-openconnect.sh
source "$here/tests-openconnect.sh"
# The command's scenarios, one file per subcommand or two.
for f in "$here"/tests-cli-*.sh; do
    # shellcheck source=/dev/null
    [[ -e $f ]] && source "$f"
done
# shellcheck source=bench.sh
source "$here/bench.sh"
# shellcheck source=bench-activation.sh
source "$here/bench-activation.sh"
# shellcheck source=bench-load.sh
source "$here/bench-load.sh"

record() { echo "$1 $2" >>"$RIG_RESULTS"; }

rig_ready=
on_exit() {
    set +eE
    if [[ -z $rig_ready ]]; then
        record FAIL rig_up
        rig_dump_logs
    fi
    rig_down
    # Keep the logs of a failed run for a post-mortem; a green run leaves nothing behind.
    if grep -q '^FAIL' "$RIG_RESULTS"; then
        echo "rig logs kept in ${RIG_W:-(none)}"
    elif [[ -n ${RIG_W:-} ]]; then
        rm -rf "$RIG_W"
    fi
}
trap on_exit EXIT
selected=("$@")
((${#selected[@]})) || selected=("${E2E_TESTS[@]}")

start=$SECONDS
# errexit applies inside rig_up only when it is not called from a condition.
set -eE
trap 'rig_log "rig set-up failed at ${BASH_SOURCE[0]##*/}:$LINENO: $BASH_COMMAND"' ERR
rig_up "$src"
trap - ERR
set +eE
rig_ready=1
echo "rig ready in $((SECONDS - start)) s"

for t in "${selected[@]}"; do
    echo "=== $t"
    t0=$SECONDS
    # Each scenario that isolates runs under the leak monitor (lib/leak.sh), and fails on its verdict.
    leak_watch_start "$t"
    (set -eE; "$t") 2>&1 | tee "$RIG_W/$t.out"
    rc=${PIPESTATUS[0]}
    leak_watch_check "$t" 2>&1 | tee -a "$RIG_W/$t.out"
    ((PIPESTATUS[0] == 0)) || rc=1
    if ((rc == 0)); then
        record PASS "$t"
        echo "PASS $t ($((SECONDS - t0)) s)"
    else
        record FAIL "$t"
        echo "FAIL $t ($((SECONDS - t0)) s)"
        rig_dump_logs
        rig_settle_after_failure
    fi
done
