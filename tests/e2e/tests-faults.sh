# shellcheck shell=bash
# Fault scenarios: a process of the VPN killed at any point, the server, NetworkManager or the
# namespace going away under a live VPN, a read-only /etc/netns, a name clash in the namespace, and
# quick up/down cycles. Each scenario states the end state it expects. All of them check that nothing
# leaked into the root namespace, that nothing of the VPN is left (namespace, /etc/netns entry, record,
# mount, process), that NM's state is right, and that the next `up` works and goes down clean.

# ---- what every fault scenario checks -------------------------------------------------------------

# The mount table lines of the sandbox's main mount namespace and of NM's that mount namespace $1.
fault_mounts() {
    local nm
    nm=$(rig_nm_pid)
    rig_sb cat /proc/self/mountinfo ${nm:+"/proc/$nm/mountinfo"} | grep -F -- " /run/netns/$1 " || true
}

# NM does not list connection $1 among the active ones.
nm_inactive() { [[ -z $(rig_state "$1") ]]; }

# The records under /run/nm-vpn-netns that say leased, one file name a line.
leased_records() { rig_sb grep -l '"leased": true' -r /run/nm-vpn-netns 2>/dev/null || true; }

# NAME NS BEFORE: after a fault, or a down, NM has connection NAME down, nothing of namespace NS is
# left (namespace, /etc/netns entry, record, mount, VPN process), and the root namespace is as in the
# snapshot BEFORE.
assert_fault_clean() {
    local name=$1 ns=$2 before=$3
    expect_within "NM still reports $name active" 30 nm_inactive "$name"
    assert_root_clean
    assert_gone "$ns" "$before"
    expect_sb_absent "the record of $ns remains" "/run/nm-vpn-netns/$ns"
    expect_eq "a mount of /run/netns/$ns remains" "" "$(fault_mounts "$ns")"
    pass_note "NM has $name down; no leak, no namespace, /etc/netns entry, record, mount or process of $ns"
}

# NAME NS BEFORE: the next up of NAME works, and its down leaves nothing.
assert_next_up() {
    local name=$1 ns=$2 before=$3
    expect_cmd_ok "the next up of $name failed" rig_up_nmcli "$name"
    expect_activated "NM does not report $name activated after the next up" "$name"
    expect_ping "no ping from $ns after the next up" 10 rig_ns "$ns"
    assert_root_clean
    expect_cmd_ok "the next down of $name failed" rig_down_nmcli "$name"
    assert_fault_clean "$name" "$ns" "$before"
    pass_note "the next up of $name works, and its down leaves nothing"
}

# NAME N [KEY=VALUE...]: the isolated profile NAME, in namespace NAME, with client certificate N.
# Whatever the scenario's end, the profile goes, and so does its VPN if still up: a failure does not
# spill into the next scenario.
fault_profile() {
    rig_profile_keyfile "$1" "$2" ca netns-isolate=yes "netns-name=$1" "${@:3}"
    FAULT_NAME=$1
    trap fault_exit EXIT
}

# NAME N [KEY=VALUE...]: a fault scenario's start: the snapshot of the root namespace in FAULT_BEFORE,
# then the profile (fault_profile).
fault_begin() {
    FAULT_BEFORE=$(rig_snapshot)
    fault_profile "$@"
}

# NAME N [KEY=VALUE...]: fault_begin, then the VPN up and working in namespace NAME.
fault_begin_up() {
    fault_begin "$@"
    fault_up "$1" "$1"
}

# NAME: the end state of a fault scenario begun with fault_begin: NAME down and nothing left, and the
# next up works and goes down clean.
fault_end() {
    assert_fault_clean "$1" "$1" "$FAULT_BEFORE"
    assert_next_up "$1" "$1" "$FAULT_BEFORE"
}

# Undoes what a scenario may leave when it fails: strace on the agent, the VPN and its profile, and
# whatever FAULT_UNDO says (a command).
fault_exit() {
    agent_unstall
    rig_down_nmcli "$FAULT_NAME" >/dev/null 2>&1 || true
    rig_profile_delete "$FAULT_NAME"
    [[ -z ${FAULT_UNDO:-} ]] || eval "$FAULT_UNDO" || true
}

# NAME NS: brings the isolated VPN NAME up in NS and checks it works.
fault_up() {
    expect_cmd_ok "nmcli connection up $1 failed" rig_up_nmcli "$1"
    expect_activated "NM does not report $1 activated" "$1"
    expect_ping "no ping from $2" 10 rig_ns "$2"
    assert_root_clean
}

# Starts the agent if no agent runs (as any call would), and puts its PID in AGENT_PID.
agent_start() {
    rig_sb dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.StartServiceByName string:io.github.NmVpnNetns.Agent1 uint32:0 >/dev/null
    expect_agent_running "no agent on the bus after StartServiceByName"
}

# ---- kill -9 of the agent inside a call --------------------------------------------------------------

# Every thread of process $1 of the sandbox is traced.
all_traced() {
    # shellcheck disable=SC2016 # expanded by the sandbox's shell
    rig_sb sh -c 'for t in /proc/$1/task/*; do grep -q "^TracerPid:[[:space:]]*[1-9]" "$t/status" || exit 1; done' sh "$1"
}

# Ends strace (with signal $1, by default TERM: it lets go of the agent, which goes on), if it runs.
agent_unstall() {
    local pid
    pid=$(sb_pid strace)
    [[ -z $pid ]] || rig_sb kill "${1:--TERM}" "$pid" 2>/dev/null || true
}

# SYSCALL WHEN [PATH]: from now on, each SYSCALL of the agent (AGENT_PID), on PATH when given, stalls for
# 30 s at WHEN (delay_enter: before the kernel runs it; delay_exit: after). strace's tampering is how
# the scenario holds the agent inside a call long enough to kill it there, with no hook in the agent.
agent_stall() {
    rig_sb strace -f -qq -o "$RIG_IN/stall.strace" -e trace="$1" -e inject="$1:$2=30000000" ${3:+-P "$3"} \
        -p "$AGENT_PID" >/dev/null 2>&1 &
    expect_within "strace did not attach to the agent (pid $AGENT_PID)" 10 all_traced "$AGENT_PID"
}

# The agent's name is not owned by process $1: by none, or by a new agent (the plugin whose call the
# killed agent never answered starts one, so that it releases what the killed one recorded).
agent_not() { [[ $(agent_pid) != "$1" ]]; }

# Kills the agent (AGENT_PID) with SIGKILL and waits until it and its name are gone. A traced process
# dies only once its tracer lets go of it: strace goes too.
agent_kill9() {
    rig_sb kill -9 "$AGENT_PID"
    agent_unstall -9
    expect_within "the agent (pid $AGENT_PID) survived kill -9" 5 sb_pid_gone "$AGENT_PID"
    expect_within "the killed agent (pid $AGENT_PID) still owns its name" 5 agent_not "$AGENT_PID"
}

ns_mounted() { rig_sb mountpoint -q "/run/netns/$1"; }
ns_unmounted() { ! ns_mounted "$1"; }
record_exists() { rig_sb test -e "/run/nm-vpn-netns/$1"; }
ns_has_tun() { output_matches ' tun ' rig_sb ip -n "$1" -d link show; }

# NS WHAT SYSCALL WHEN PATH STATE: the agent killed inside the call that makes namespace NS (Prepare,
# at Connect, since 0.4) or isolates the tun in it (Isolate), once STATE (a probe, given NS) holds
# while SYSCALL stalls. Expected: the activation fails, NM has the VPN down, nothing is left, and the
# next up works.
agent_killed_in_isolate() {
    local name=$1 ns=$1 what=$2 rc=0 out up
    fault_begin "$name" 1 netns-timeout=30000
    agent_start
    agent_stall "$3" "$4" "$5"
    rig_up_nmcli "$name" >"$RIG_W/$name.up" 2>&1 &
    up=$!
    expect_within "the agent never reached the point $what" 30 "$6" "$ns"
    agent_kill9
    pass_note "killed the agent (pid $AGENT_PID) inside Prepare or Isolate, $what"
    wait "$up" || rc=$?
    out=$(cat "$RIG_W/$name.up")
    ((rc != 0)) || expect_failed "the activation succeeded with the agent killed inside its call" "nmcli to fail" "$out"
    pass_note "the activation failed: $(grep -o 'Error:.*' <<<"$out" | head -1)"
    fault_end "$name"
}

# The namespace is mounted, and no record written yet.
t_fault_agent_killed_before_record() {
    agent_killed_in_isolate kill-mount "after the namespace's mount, before its record" \
        mount delay_exit /run/netns/kill-mount ns_mounted
}

# The record is written, and the tun is still in the root namespace.
t_fault_agent_killed_before_move() {
    agent_killed_in_isolate kill-record "after the record, before the move" \
        renameat2 delay_exit "" record_exists
}

# The tun is in the namespace, not yet configured (each setns, which configuring takes, stalls).
t_fault_agent_killed_before_config() {
    agent_killed_in_isolate kill-move "after the move, before the tun is configured" \
        setns delay_enter "" ns_has_tun
}

# Expected: down kills the agent inside Release once the namespace is unmounted; NM has the VPN down,
# nothing is left, and the next up works.
t_fault_agent_killed_in_release() {
    local name=rel-kill ns=rel-kill
    fault_begin_up "$name" 2
    expect_agent_running "no agent on the bus after up"
    agent_stall umount2 delay_exit "/run/netns/$ns"
    rig_down_nmcli "$name" >/dev/null 2>&1 &
    local down=$!
    expect_within "the agent never unmounted $ns" 30 ns_unmounted "$ns"
    agent_kill9
    pass_note "killed the agent (pid $AGENT_PID) inside Release, after the namespace's unmount"
    wait "$down" || true
    fault_end "$name"
}

# ---- a connect that fails after Prepare --------------------------------------------------------------

# Expected: an isolated connect that fails after the agent's Prepare made its namespace leaves
# nothing: no namespace, /etc/netns entry, record, mount or lease. The profile trusts the wrong CA,
# so openvpn never finishes its handshake and NM gives up at vpn.timeout (10 s); the namespace is
# there meanwhile. The next up, with the right CA, works.
t_fault_connect_fails_after_prepare() {
    local name=prep-fail rc=0 out up
    FAULT_BEFORE=$(rig_snapshot)
    rig_profile_keyfile "$name" 3 wrong-ca netns-isolate=yes "netns-name=$name" timeout=10
    FAULT_NAME=$name
    trap fault_exit EXIT
    rig_up_nmcli "$name" >"$RIG_W/$name.up" 2>&1 &
    up=$!
    expect_within "no namespace $name while openvpn connects" 10 ns_mounted "$name"
    expect_within "no record of $name while openvpn connects" 5 record_exists "$name"
    pass_note "Prepare made namespace $name while openvpn was still connecting"
    wait "$up" || rc=$?
    out=$(cat "$RIG_W/$name.up")
    ((rc != 0)) || expect_failed "a VPN with the wrong CA activated" "nmcli to fail" "$out"
    pass_note "the activation failed: $(grep -o 'Error:.*' <<<"$out" | head -1)"
    assert_fault_clean "$name" "$name" "$FAULT_BEFORE"
    expect_eq "a record says leased after the failed connect" "" "$(leased_records)"
    pass_note "no lease is left"
    rig_profile_delete "$name"
    fault_profile "$name" 3
    assert_next_up "$name" "$name" "$FAULT_BEFORE"
}

# ---- kill -9 of a process of the VPN while connected ------------------------------------------------

# COMM TAG N: kills the sandbox's process named COMM with SIGKILL while an isolated VPN (client N) is
# connected. Expected: NM has the VPN down, everything is released, nothing is left; the next up works.
vpn_proc_killed() {
    local comm=$1 name=kill-$2 pid
    fault_begin_up "$name" "$3"
    pid=$(sb_pid "$comm")
    [[ -n $pid ]] || expect_failed "no process named $comm" "a process named $comm" "$(sb_ps)"
    rig_sb kill -9 "$pid"
    expect_within "$comm (pid $pid) survived kill -9" 5 sb_pid_gone "$pid"
    pass_note "killed $comm (pid $pid) with the VPN up"
    fault_end "$name"
}

t_fault_shim_killed() { vpn_proc_killed nm-vpn-netns-se shim 3; }

# The plugin killed while its stock service is stopped (SIGSTOP). Its process group, with openvpn in
# it, is then orphaned with a stopped member, so the kernel sends the group SIGHUP and SIGCONT (POSIX
# job control): the stock service dies of SIGHUP without ending openvpn, and openvpn restarts. This is
# a stock service that dies and leaves openvpn, as one did once on booted Debian 13. Expected: the
# agent ends the group's processes itself before it deletes the namespace, so no openvpn is left
# (spinning on a destroyed tun, or reconnected in the root namespace), and nothing else is left.
t_fault_shim_killed_stock_stopped() {
    local name=kill-hung stock pid
    fault_begin_up "$name" 3
    stock=$(sb_pid nm-openvpn-serv) pid=$(sb_pid nm-vpn-netns-se)
    [[ -n $stock && -n $pid ]] || expect_failed "no stock service or plugin" "nm-openvpn-serv and nm-vpn-netns-se" "$(sb_ps)"
    FAULT_UNDO="rig_sb kill -CONT $stock 2>/dev/null"
    SB_LINES=$(wc -l <"$RIG_W/sandbox.log")
    rig_sb kill -STOP "$stock"
    rig_sb kill -9 "$pid"
    expect_within "the plugin (pid $pid) survived kill -9" 5 sb_pid_gone "$pid"
    pass_note "stopped nm-openvpn-serv (pid $stock), then killed the plugin (pid $pid) with SIGKILL"
    fault_end "$name"
    expect_within "the agent does not say it ended the stock service's group" 10 \
        grep_since sandbox.log "$SB_LINES" "left the bus; ending its processes $stock (nm-openvpn-serv), [0-9]* (openvpn)"
    pass_note "the agent: $(grep -m1 -o 'left the bus; ending .*' <(tail -n +"$((SB_LINES + 1))" "$RIG_W/sandbox.log"))"
}

t_fault_stock_killed() { vpn_proc_killed nm-openvpn-serv stock 4; }
t_fault_openvpn_killed() { vpn_proc_killed openvpn openvpn 1; }

# ---- the world around the VPN ----------------------------------------------------------------------

# The addresses in namespace $1, one a line.
ns_addrs() { rig_sb ip -n "$1" -o addr show | awk '{print $2, $4}'; }

# The server stopped (as a dead or unreachable server is) until openvpn's ping-restart fires, then
# restarted with no memory of its clients. It gives the client the same address again (the rig's
# server has a fixed one for each client certificate; t_fault_server_new_address is the other case).
# Expected: the tunnel comes back in the same namespace with the same addresses, NM keeps the VPN
# activated, and a process started inside before keeps running.
t_fault_server_restart() {
    local name=srv-restart ns=srv-restart ino addrs app
    fault_begin_up "$name" 2
    ino=$(rig_sb stat -L -c %i "/run/netns/$ns")
    addrs=$(ns_addrs "$ns")
    rig_sb sh -c "echo \$\$ >$RIG_IN/srv-app.pid; exec ip netns exec $ns sleep 600" >/dev/null 2>&1 &
    expect_within "the app did not start" 5 test -s "$RIG_W/srv-app.pid"
    app=$(cat "$RIG_W/srv-app.pid")
    FAULT_UNDO="kill -CONT $RIG_SERVER_PID; rig_sb kill $app"
    kill -STOP "$RIG_SERVER_PID"
    expect_no_ping "the tunnel answers with the server stopped" rig_ns "$ns"
    # The fault's length, not a timed check: the server pushes `keepalive 2 20`, so openvpn's
    # ping-restart fires while the server is still down.
    sleep 25
    expect_no_ping "the tunnel answers with the server stopped" rig_ns "$ns"
    assert_root_clean
    pass_note "server stopped for longer than openvpn's ping-restart: no answer through the tunnel, no leak"
    # SIGUSR1 restarts the server: it forgets its clients, and keeps its tun (persist-tun).
    kill -USR1 "$RIG_SERVER_PID"
    kill -CONT "$RIG_SERVER_PID"
    expect_ping "the tunnel did not come back after the server's restart" 60 rig_ns "$ns"
    expect_eq "the namespace changed" "$ino" "$(rig_sb stat -L -c %i "/run/netns/$ns")"
    expect_same "the addresses in $ns changed" "$addrs" "$(ns_addrs "$ns")"
    expect_activated "NM does not report $name activated after the server's restart" "$name"
    expect_cmd_ok "the app in $ns died" rig_sb kill -0 "$app"
    assert_root_clean
    pass_note "server restarted: the tunnel is back in the same namespace, with the same addresses; the app inside still runs"
    rig_sb kill "$app"
    FAULT_UNDO=
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli "$name"
    assert_fault_clean "$name" "$ns" "$FAULT_BEFORE"
}

root_has_tun() { output_matches ' tun ' rig_sb ip -d link show; }

# FILE LINES PATTERN: a line of $RIG_W/FILE after its first LINES matches PATTERN.
# (Not a pipe: with pipefail, tail killed by SIGPIPE after grep's first match would fail it.)
grep_since() { grep -q -- "$3" <(tail -n +"$(($2 + 1))" "$RIG_W/$1"); }

# The server gives client 4 another address from its next connection on, as a server whose address
# pool forgot the client (a restart) may do, and openvpn reconnects (SIGUSR1: as after the server's
# restart, without the wait for ping-restart). The line counts of the sandbox's and NM's logs before
# go to SB_LINES and NM_LINES.
new_address_reconnect() {
    local ccd=$RIG_W/ccd/rig-client4
    FAULT_UNDO="rig_client_addr 4 >$ccd; ${FAULT_UNDO:-}"
    rig_client_addr 4 14 >"$ccd"
    SB_LINES=$(wc -l <"$RIG_W/sandbox.log")
    NM_LINES=$(wc -l <"$RIG_W/nm.log")
    rig_sb kill -USR1 "$(sb_pid openvpn)"
}

# NM's log since line NM_LINES: a line that says the tun left namespace NS ($1), printed.
nm_log_tun_left() {
    nm_log_says "left namespace $1"
}

# PATTERN: whether NM's log has it since line NM_LINES; prints the first such line.
nm_log_says() {
    grep_since nm.log "$NM_LINES" "$1" || return 1
    grep -m1 -- "$1" <(tail -n +"$((NM_LINES + 1))" "$RIG_W/nm.log") | sed 's/^/    NM log: /'
}

root_no_tun() { ! root_has_tun; }

# The pushed address changes on a reconnect. openvpn then closes the tun, which the kernel destroys
# inside the namespace, and opens a new one in its own namespace, the root one (Debian's openvpn
# keeps CAP_NET_ADMIN when it drops root), down and with no address: it no longer runs as root, so
# D-Bus refuses its helper's new configuration. The agent watches the tun and tells the shim that
# it left the namespace. Expected: the VPN fails (NM has it down and its log says why), the stock
# service and openvpn end, and with them the new tun in the root namespace, which never gets an
# address, route or DNS of the VPN; nothing is left, and the next up works.
t_fault_server_new_address() {
    local name=srv-addr ns=srv-addr
    fault_begin_up "$name" 4
    new_address_reconnect
    expect_within "NM still reports $name active after the new address" 30 nm_inactive "$name"
    expect_within "NM's log does not say that the tun left $ns" 10 nm_log_tun_left "$ns"
    pass_note "new address: the tun left $ns, and the VPN failed"
    expect_vpn_gone "a process of the VPN still runs after the tun left $ns"
    expect_within "a tun remains in the root namespace" 10 root_no_tun
    assert_root_unconfigured
    pass_note "the VPN's processes ended, and with them the new tun in the root namespace"
    eval "$FAULT_UNDO"
    FAULT_UNDO=
    fault_end "$name"
}

# The same with openvpn kept root (NM_OPENVPN_USER empty): the agent's watch reports the tun's
# departure, or its helper's new configuration reaches the shim first, whose Reapply then fails,
# as the tun is no longer in the namespace. Either way, expected: the shim stops the VPN, NM has it
# down, nothing is left, and the next up works.
t_fault_server_new_address_root() {
    local name=srv-addr-root ns=srv-addr-root
    rig_nm_restart NM_OPENVPN_USER=
    FAULT_UNDO=rig_nm_restart
    fault_begin_up "$name" 4
    new_address_reconnect
    expect_within "the shim did not report a failed Reapply or the tun's departure" 30 \
        grep_since nm.log "$NM_LINES" "Reapply of the agent failed\\|left namespace $ns"
    grep -m1 "Reapply of the agent failed\\|left namespace $ns" <(tail -n +"$((NM_LINES + 1))" "$RIG_W/nm.log") |
        sed 's/^/    NM log: /'
    pass_note "new address with openvpn as root: the shim saw the tun leave $ns"
    expect_vpn_gone "a process of the VPN still runs after the tun left $ns"
    rig_client_addr 4 >"$RIG_W/ccd/rig-client4"
    fault_end "$name"
    rig_nm_restart
    FAULT_UNDO=
}

# NetworkManager restarted (SIGTERM, then started again) with an isolated VPN up.
t_fault_nm_restart() {
    local name=nm-restart ns=nm-restart
    fault_begin_up "$name" 3
    rig_nm_stop
    pass_note "NetworkManager stopped with the VPN up"
    expect_vpn_gone "a process of the VPN outlived NetworkManager"
    expect_netns_gone "namespace $ns outlived NetworkManager" "$ns" 10
    rig_nm_start
    [[ $(rig_state uplink) == activated ]] || rig_sb nmcli -w 20 connection up uplink >/dev/null
    pass_note "NetworkManager started again"
    fault_end "$name"
}

# The namespace deleted from outside (`ip netns del`) while connected.
# NAME HOW...: with the isolated VPN NAME up, its namespace's name is taken from outside by the
# command HOW (run in the sandbox). Expected: the agent's watch sees it and tells the shim, which
# fails the VPN; NM has it down, its processes end, nothing is left in the root namespace, and the
# next up works.
netns_taken() {
    local name=$1 ns=$1
    shift
    fault_begin_up "$name" 4
    NM_LINES=$(wc -l <"$RIG_W/nm.log")
    rig_sb "$@"
    pass_note "$* with the VPN up"
    expect_within "NM still reports $name active after $*" 30 nm_inactive "$name"
    expect_within "NM's log does not say that $ns was deleted" 10 nm_log_says "namespace $ns was deleted"
    pass_note "the VPN failed"
    expect_vpn_gone "a process of the VPN still runs after $*"
    expect_within "a tun remains in the root namespace" 10 root_no_tun
    assert_root_unconfigured
    fault_end "$name"
}

t_fault_netns_deleted() { netns_taken ns-del ip netns del ns-del; }

# `umount` alone leaves the name, an empty file under it; the agent's release then removes that
# file, which it made, as its leftover.
t_fault_netns_unmounted() { netns_taken ns-umount umount /run/netns/ns-umount; }

# /etc/netns read-only. Expected: the isolated up fails, NM's log says why, and nothing is left.
t_fault_etc_netns_ro() {
    local name=ro-etc ns=ro-etc made='' lines log
    rig_sb test -d /etc/netns || made=1
    rig_sb mkdir -p /etc/netns
    FAULT_UNDO="rig_sb umount /etc/netns"
    rig_sb mount --bind /etc/netns /etc/netns
    rig_sb mount -o remount,bind,ro /etc/netns
    fault_begin "$name" 1
    lines=$(wc -l <"$RIG_W/nm.log")
    expect_cmd_fails "the VPN came up with /etc/netns read-only" rig_up_nmcli "$name"
    log=$(tail -n +"$lines" "$RIG_W/nm.log")
    expect_match "NM's log does not say that /etc/netns is read-only" '/etc/netns.*[Rr]ead-only' "$log"
    grep -m1 -E '/etc/netns.*[Rr]ead-only' <<<"$log" | sed 's/^/    NM log: /'
    rig_wait 20 vpn_procs_settled || true
    assert_fault_clean "$name" "$ns" "$FAULT_BEFORE"
    rig_sb umount /etc/netns
    FAULT_UNDO=
    [[ -z $made ]] || rig_sb rmdir /etc/netns
    FAULT_BEFORE=$(rig_snapshot)
    assert_next_up "$name" "$ns" "$FAULT_BEFORE"
}

# A link named as the VPN's tun already in the target namespace (a persistent one, kept from the
# last down). Expected: the move renames the tun, the VPN works, and down leaves the namespace's
# links as they were.
t_fault_tun_clash() {
    local name=clash ns=clash tun links
    fault_begin_up "$name" 2 netns-persistent=yes
    tun=$(rig_sb ip -n "$ns" -o link show type tun | awk -F': ' '{print $2}')
    tun=${tun%%@*}
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli "$name"
    expect_vpn_gone
    rig_sb ip -n "$ns" tuntap add dev "$tun" mode tun
    links=$(rig_sb ip -n "$ns" -br link show)
    pass_note "a tun named $tun waits in the persistent namespace $ns"
    fault_up "$name" "$ns"
    local inside
    inside=$(rig_sb ip -n "$ns" -br link show)
    printf '    in %s: %s\n' "$ns" "${inside//$'\n'/ | }"
    expect_match "the VPN's tun was not renamed" '^vpn0 ' "$inside"
    expect_match "the waiting tun is gone" "^$tun " "$inside"
    pass_note "the VPN's tun was renamed to vpn0 beside $tun, and the VPN works"
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli "$name"
    expect_vpn_gone
    expect_within "nm still reports $name active" 30 nm_inactive "$name"
    expect_same "down did not leave the namespace's links as they were" "$links" "$(rig_sb ip -n "$ns" -br link show)"
    assert_root_clean
    pass_note "down left $ns with its own links only"
    rig_sb ip -n "$ns" link del "$tun"
    rig_sb ip netns del "$ns"
    rig_sb rm -rf "/etc/netns/$ns"
}

# ---- quick up/down cycles ----------------------------------------------------------------------

# The agent's open fds, threads, leases and RSS (kB), as "FDS THREADS LEASES RSS".
agent_usage() {
    local pid status
    pid=$(agent_pid)
    status=$(rig_sb cat "/proc/$pid/status")
    echo "$(rig_sb ls "/proc/$pid/fd" | wc -l) $(awk '/^Threads/ {print $2}' <<<"$status")" \
        "$(leased_records | grep -c .) $(awk '/^VmRSS/ {print $2}' <<<"$status")"
}

# The agent's fds, threads and leases are $1 (its RSS aside).
agent_usage_is() { [[ $(agent_usage | cut -d' ' -f1-3) == "$1" ]]; }

# NAME NS FROM TO: up/down cycles FROM to TO of the isolated VPN NAME in namespace NS. After an odd
# cycle's down, the VPN's processes and namespace must be gone; after an even one, the next `up`
# follows at once. Also the soak of the memory benchmark (bench-load.sh).
fault_cycles() {
    local name=$1 ns=$2 i
    for ((i = $3; i <= $4; i++)); do
        expect_cmd_ok "up $i of $4 failed" rig_up_nmcli "$name"
        expect_cmd_ok "down $i of $4 failed" rig_down_nmcli "$name"
        if ((i % 2)); then
            expect_vpn_gone "cycle $i: a process of the VPN still runs after down"
            expect_netns_gone "cycle $i: namespace $ns remains after down" "$ns" 10
        fi
    done
}

# E2E_CYCLES (default 20) up/down cycles of one isolated VPN; every other `up` follows its `down`
# at once, with no wait for the VPN's processes to exit. Expected: each up works, and afterwards the
# agent has as many fds, threads and leases as before, and nothing is left.
t_fault_cycles() {
    local name=cycle ns=cycle n=${E2E_CYCLES:-20} base_pid base after t0=$SECONDS
    local fds0 threads0 leases0 rss0 fds1 threads1 leases1 rss1
    # The first cycle starts the agent: the baseline is taken after it.
    fault_begin_up "$name" 3
    rig_down_nmcli "$name" >/dev/null
    assert_fault_clean "$name" "$ns" "$FAULT_BEFORE"
    base_pid=$(agent_pid)
    base=$(agent_usage)
    fault_cycles "$name" "$ns" 2 "$n"
    pass_note "$n up/down cycles, $((n / 2)) of them with up at once after down, in $((SECONDS - t0)) s"
    assert_fault_clean "$name" "$ns" "$FAULT_BEFORE"
    expect_eq "the agent was restarted during the cycles" "$base_pid" "$(agent_pid)"
    # Threads of a finished blocking call linger a few seconds before they exit.
    rig_wait 20 agent_usage_is "$(cut -d' ' -f1-3 <<<"$base")" || true
    after=$(agent_usage)
    read -r fds0 threads0 leases0 rss0 <<<"$base"
    read -r fds1 threads1 leases1 rss1 <<<"$after"
    expect_eq "the agent's open fds changed over $n cycles" "$fds0" "$fds1"
    expect_eq "the agent's threads changed over $n cycles" "$threads0" "$threads1"
    expect_eq "leases are left after $n cycles" "$leases0" "$leases1"
    pass_note "agent (pid $base_pid): $fds1 fds, $threads1 threads, $leases1 leases, as before the cycles"
    echo "    agent RSS: ${rss0} kB after the first cycle, ${rss1} kB after $n cycles"
}

E2E_TESTS+=(t_fault_agent_killed_before_record t_fault_agent_killed_before_move
    t_fault_agent_killed_before_config t_fault_agent_killed_in_release t_fault_shim_killed
    t_fault_shim_killed_stock_stopped t_fault_stock_killed t_fault_openvpn_killed
    t_fault_server_restart t_fault_server_new_address
    t_fault_server_new_address_root t_fault_nm_restart t_fault_netns_deleted t_fault_netns_unmounted
    t_fault_etc_netns_ro
    t_fault_tun_clash t_fault_cycles)
