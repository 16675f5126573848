# shellcheck shell=bash
# Processes: the sandbox's, found by name, and the rig's own, found by an argument.
# A name is a process's comm, which the kernel cuts to 15 characters (nm-vpn-netns-se).

# "PID NAME" of each of the sandbox's processes named one of "$@" (of every process when none is
# named), as the sandbox's main mount namespace (its /proc) sees them.
sb_ps() {
    # shellcheck disable=SC2016 # expanded by the sandbox's shell
    rig_sb sh -c 'for p in /proc/[0-9]*; do
        c=$(cat "$p/comm" 2>/dev/null) || continue
        if [ $# -eq 0 ]; then echo "${p#/proc/} $c"; fi
        for n; do [ "$c" = "$n" ] && echo "${p#/proc/} $c"; done
    done; true' sh "$@"
}

# The PIDs of the sandbox's processes named one of "$@", one a line.
sb_pids() {
    local ps
    ps=$(sb_ps "$@")
    [[ -z $ps ]] || awk '{print $1}' <<<"$ps"
}

# The first PID of the sandbox's processes named $1; nothing when there is none.
sb_pid() {
    local pids
    pids=$(sb_pids "$1")
    [[ -z $pids ]] || echo "${pids%%$'\n'*}"
}

# The names of the sandbox's processes named one of "$@", one a process, sorted.
sb_names() {
    local ps
    ps=$(sb_ps "$@")
    [[ -z $ps ]] || cut -d' ' -f2- <<<"$ps" | sort
}

# Succeeds when no process of the sandbox is named one of "$@".
sb_none() { [[ -z $(sb_ps "$@") ]]; }

# Succeeds when process $1 of the sandbox has ended.
sb_pid_gone() { ! rig_sb kill -0 "$1" 2>/dev/null; }

# Succeeds when process $1 (in our own PID namespace) has ended.
pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# "PID ARGS" of each process, in our PID namespace, one of whose arguments contains $1. Reads
# /proc rather than `ps | grep`, so the search never finds itself.
procs_with_arg() {
    local p args
    for p in /proc/[0-9]*; do
        args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        [[ $args != *"$1"* ]] || echo "${p#/proc/} $args"
    done
}

# WHAT SECS NAME...: within SECS seconds, no process of the sandbox is named one of the NAMEs.
expect_procs_gone() {
    local what=$1 secs=$2
    shift 2
    rig_wait "$secs" sb_none "$@" && return 0
    expect_failed "$what" "within $secs s, no process named ${*}" "$(sb_ps "$@")"
}

# WHAT NAME: a process of the sandbox is named NAME.
expect_proc_running() {
    sb_none "$2" || return 0
    expect_failed "$1" "a process named $2 among the sandbox's" "$(sb_ps)"
}

# The processes of a VPN: openvpn, the stock plugin and ours (comm is cut to 15 characters).
VPN_PROCS=(openvpn nm-openvpn-serv nm-vpn-netns-se)

# Waits until no process of a VPN runs in the sandbox. openvpn exits 1-2 s after `down` because
# of explicit-exit-notify, and the plugins only after it: a snapshot taken when openvpn is gone
# may still catch a plugin on its way out.
rig_wait_vpn_gone() { rig_wait 15 sb_none "${VPN_PROCS[@]}"; }

# The same as a check: WHAT is the failure's message.
expect_vpn_gone() { expect_procs_gone "${1:-a process of the VPN still runs after down}" 15 "${VPN_PROCS[@]}"; }

# Succeeds when the sandbox runs no more processes of each VPN kind than the active VPNs need
# (one openvpn, one stock plugin and one shim each): a VPN that just failed or went down has no
# plugin left on its way out. NM may still spawn or stop a plugin a moment after nmcli returns.
vpn_procs_settled() {
    local active n pids
    active=$(rig_sb nmcli -t -f TYPE connection show --active) || return 1
    active=$(grep -c '^vpn$' <<<"$active") || true
    for n in "${VPN_PROCS[@]}"; do
        pids=$(sb_pids "$n")
        (($(grep -c . <<<"$pids") <= active)) || return 1
    done
}

# After a failed scenario: brings every active VPN down and ends, by PID, any VPN process still
# left in the sandbox, so that one failure does not fail the scenarios after it as well.
rig_settle_after_failure() {
    local id n pid
    while IFS=: read -r id n; do
        [[ $n == vpn ]] && rig_sb nmcli connection down id "$id" >/dev/null 2>&1
    done < <(rig_sb nmcli -t -f NAME,TYPE connection show --active 2>/dev/null)
    rig_wait_vpn_gone && return 0
    for n in "${VPN_PROCS[@]}"; do
        for pid in $(sb_pids "$n"); do
            echo "  settling after the failure: ending $n (pid $pid)"
            rig_sb kill -9 "$pid" 2>/dev/null
        done
    done
    rig_wait_vpn_gone
}

