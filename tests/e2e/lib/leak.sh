# shellcheck shell=bash
# The leak monitor (tests/e2e/leak-monitor.py) around the scenarios: run.sh starts one before each
# scenario that isolates and checks it after. It watches the sandbox's root namespace over
# rtnetlink and its resolver files for the whole scenario; see the script for what a leak is.
#
# Every scenario runs under it except those in E2E_UNISOLATED (the stock VPN's, whose tun rightly
# has addresses and routes in the root namespace) and the benchmarks. A scenario that goes on to an
# un-isolated VPN after its isolated part calls leak_watch_end first.

# The monitor's arguments for this rig: the VPN's networks, DNS servers and domain, the resolver
# files NetworkManager writes, and the agent's log (its stderr goes to the sandbox's).
leak_monitor_args() {
    printf '%s\n' --vpn-net 198.19.0.0/16 --vpn-net fd00:198:19::/48 \
        --vpn-dns "$RIG_TUN_SERVER_IP" --vpn-dns "$RIG_TUN_SERVER_IP6" --vpn-domain "$RIG_DNS_DOMAIN" \
        --resolver /etc/resolv.conf --resolver /run/NetworkManager/resolv.conf \
        --resolver /run/NetworkManager/no-stub-resolv.conf --agent-log "$RIG_IN/sandbox.log"
}

# Succeeds when scenario $1 runs under the monitor.
leak_watched() {
    local t
    [[ $1 != b_* ]] || return 1
    for t in "${E2E_UNISOLATED[@]}"; do
        [[ $t != "$1" ]] || return 1
    done
}

# Starts a monitor whose files are in directory $1 (the caller's side of $RIG_W), with extra
# arguments "$@" after the rig's; waits until it has subscribed and read the state. Its PID goes
# to LEAK_PID. A monitor that cannot start leaves rc 2 and a report saying why.
leak_monitor_start() {
    local d=$1 in=$RIG_IN/${1#"$RIG_W"/} args
    shift
    rm -rf "$d"
    mkdir -p "$d"
    mapfile -t args < <(leak_monitor_args)
    rig_sb /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/leak-monitor.py" "${args[@]}" "$@" --ready "$in/ready" \
        --stop "$in/stop" --report "$in/report" --rc "$in/rc" </dev/null >"$d/stderr" 2>&1 &
    LEAK_PID=$!
    rig_wait 10 leak_monitor_answered "$d" && [[ -e $d/ready ]] && return 0
    touch "$d/stop"
    rig_wait 5 test -e "$d/rc" || { echo 2 >"$d/rc" && echo "leak monitor: it did not start" >"$d/report"; }
    cat "$d/stderr" >>"$d/report"
}

# The monitor in directory $1 is ready, or has ended.
leak_monitor_answered() { [[ -e $1/ready || -e $1/rc ]]; }

# Stops the monitor in directory $1, prints its report, and returns its exit code.
leak_monitor_stop() {
    local d=$1 rc
    touch "$d/stop"
    rig_wait 30 test -e "$d/rc" || { echo 2 >"$d/rc" && echo "leak monitor: it did not stop within 30 s" >"$d/report"; }
    [[ ! -s $d/stderr ]] || cat "$d/stderr" >>"$d/report"
    rc=$(cat "$d/rc")
    sed 's/^/  /' "$d/report"
    return "$rc"
}

# run.sh: before scenario $1, start its monitor when it runs under one.
leak_watch_start() {
    LEAK_DIR=
    leak_watched "$1" || return 0
    LEAK_DIR=$RIG_W/leak/$1
    leak_monitor_start "$LEAK_DIR"
}

# run.sh: after the scenario, stop its monitor and report; fails when it saw a leak.
leak_watch_check() {
    local rc=0
    [[ -n $LEAK_DIR ]] || return 0
    if [[ -e $LEAK_DIR/shown ]]; then
        echo "  leak monitor: ended by the scenario before its un-isolated part"
        rc=$(cat "$LEAK_DIR/rc")
    else
        leak_monitor_stop "$LEAK_DIR" || rc=$?
    fi
    wait "$LEAK_PID" 2>/dev/null
    return "$rc"
}

# For a scenario: end the watch here, before an un-isolated VPN; fails the scenario on a leak.
leak_watch_end() {
    [[ -n ${LEAK_DIR:-} && ! -e $LEAK_DIR/shown ]] || return 0
    touch "$LEAK_DIR/shown"
    leak_monitor_stop "$LEAK_DIR" || fail "the leak monitor saw a leak in the isolated part"
}
