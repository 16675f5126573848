#!/usr/bin/env bash
# The booted-system test, run inside the guest by the unit nm-vpn-netns-vm-test.service (run.sh adds
# both to the image). The guest is the machine a user runs: systemd as PID 1, the distribution's
# NetworkManager.service, nothing of the e2e rig's sandbox. So the rig's scenarios and checks
# (tests/e2e) are reused with the sandbox being the guest itself: rig_sb runs a command as it is.
#
#   guest-test.sh PACKAGE_A PACKAGE_B
#
# Each step runs in a subshell with errexit. Its PASS/FAIL, and the versions read here, go to
# $VM_DIR/w/results, which run.sh reads from the image after power-off; the progress goes to the
# console. Every wait is bounded; the unit's TimeoutStartSec bounds the whole.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail

VM_DIR=/opt/nm-vpn-netns-vm
pkg_a=$1 pkg_b=$2

# shellcheck source=../e2e/rig.sh
source "$VM_DIR/src/tests/e2e/rig.sh"
# shellcheck source=../e2e/tests.sh
source "$VM_DIR/src/tests/e2e/tests.sh"
# shellcheck source=../e2e/tests-isolated.sh
source "$VM_DIR/src/tests/e2e/tests-isolated.sh"
# shellcheck source=guest-local-user.sh
source "$VM_DIR/guest-local-user.sh"
# shellcheck source=guest-faults.sh
source "$VM_DIR/guest-faults.sh"

RIG_W=$VM_DIR/w
RIG_IN=$RIG_W
RIG_SRC_IN=$VM_DIR/src
# The server's openvpn runs as vpn-server (a symlink to openvpn), so that the checks that no openvpn
# of a VPN is left, which go by process name, see only the client's.
# shellcheck disable=SC2034 # read by lib/inet.sh
RIG_SERVER_OPENVPN=$VM_DIR/bin/vpn-server
RESULTS=$RIG_W/results
export DEBIAN_FRONTEND=noninteractive

rig_sb() { "$@"; }
# Under emulation every program runs several times slower than on the machine itself: one poll
# of nmcli may take a second, and openvpn and the plugins take longer to exit. The rig's waits count
# polls; here they are bounded by the clock instead, and each bound is RIG_WAIT_SCALE times the
# rig's. They only keep a hung step from hanging the run, and time nothing.
RIG_WAIT_SCALE=3
rig_wait() {
    local end=$((${EPOCHREALTIME/./} + $1 * RIG_WAIT_SCALE * 1000000))
    shift
    until "$@" >/dev/null 2>&1; do
        ((${EPOCHREALTIME/./} < end)) || return 1
        sleep 0.1
    done
}
# What a failed step shows: the journals of NetworkManager and of the agent.
rig_dump_logs() {
    echo "----- NetworkManager, last 40 lines, repeats counted"
    journalctl -q -b -u NetworkManager.service -n 2000 --no-pager | squeeze | tail -n 40
    echo "----- nm-vpn-netns-agent, last 20 lines"
    journalctl -q -b -u nm-vpn-netns-agent.service -n 20 --no-pager
}

# Log lines on stdin with a run of lines that differ only in their time stamp given once, with a
# count: a process that spins on an error (openvpn on a dead tun) would fill any tail of the log.
squeeze() {
    awk '{ m = $0; sub(/^[^]]*\]: /, "", m) }
         m == prev { n++; next }
         { if (n) print "    (" n " more times)"; n = 0; prev = m; print }
         END { if (n) print "    (" n " more times)" }'
}

# The rig's process listing without a fork per process, which under emulation takes seconds; the
# guest has a single PID namespace, so it is the rig's listing with rig_sb dropped.
sb_ps() {
    local p c n
    for p in /proc/[0-9]*; do
        { read -r c <"$p/comm"; } 2>/dev/null || continue
        (($#)) || echo "${p#/proc/} $c"
        for n; do [[ $c != "$n" ]] || echo "${p#/proc/} $c"; done
    done
}

record() { echo "$*" >>"$RESULTS"; }
version() { record "version $1 $2"; }

unit_pid() { systemctl show -p MainPID --value "$1"; }
AGENT_UNIT=nm-vpn-netns-agent.service
STOCK_NAME=/usr/lib/NetworkManager/VPN/nm-openvpn-service.name

# ---- installing and removing the product ---------------------------------------------------------

pkg_install() {
    apt-get install -y -q --no-install-recommends "$1"
}

pkg_purge() {
    apt-get purge -y -q nm-vpn-netns
}

# ---- checks from /proc ----------------------------------------------------------------------------

# The kernel's capability numbers, in order (include/uapi/linux/capability.h).
CAP_NAMES=(chown dac_override dac_read_search fowner fsetid kill setgid setuid setpcap linux_immutable
    net_bind_service net_broadcast net_admin net_raw ipc_lock ipc_owner sys_module sys_rawio sys_chroot
    sys_ptrace sys_pacct sys_admin sys_boot sys_nice sys_resource sys_time sys_tty_config mknod lease
    audit_write audit_control setfcap mac_override mac_admin syslog wake_alarm block_suspend audit_read
    perfmon bpf checkpoint_restore)

# The CapBnd mask (16 hex digits, as /proc/PID/status shows it) of the capability names "$@".
caps_mask() {
    local name i mask=0
    for name; do
        for i in "${!CAP_NAMES[@]}"; do
            [[ ${name,,} != "cap_${CAP_NAMES[i]}" ]] || mask=$((mask | 1 << i))
        done
    done
    printf '%016x\n' "$mask"
}

# NetworkManager runs under its distribution unit, unchanged, and with that unit's bounding set.
assert_nm_unit() {
    local pid unit_caps want got
    pid=$(unit_pid NetworkManager.service)
    expect_ne "NetworkManager.service has no main PID" 0 "$pid"
    expect_eq "NetworkManager.service has drop-ins, so it is not the distribution's unit" "" \
        "$(systemctl show -p DropInPaths --value NetworkManager.service)"
    unit_caps=$(systemctl show -p CapabilityBoundingSet --value NetworkManager.service)
    want=$(read -ra caps <<<"$unit_caps" && caps_mask "${caps[@]}")
    got=$(awk '/^CapBnd:/ {print $2}' "/proc/$pid/status")
    expect_eq "NetworkManager's CapBnd (/proc/$pid/status) is not its unit's CapabilityBoundingSet ($unit_caps)" "$want" "$got"
    ((((0x$got >> 21) & 1) == 0)) || expect_failed "NetworkManager has CAP_SYS_ADMIN" "no bit 21 in CapBnd" "$got"
    pass_note "NetworkManager (pid $pid) runs with CapBnd $got, its unit's CapabilityBoundingSet, without CAP_SYS_ADMIN"
}

# The agent is the main process of its systemd unit, in that unit's cgroup and PID 1's mount namespace.
assert_agent_unit() {
    local pid agents cgroup
    pid=$(unit_pid "$AGENT_UNIT")
    agents=$(sb_pids nm-vpn-netns-ag)
    expect_eq "the running agent is not the MainPID of $AGENT_UNIT" "$agents" "$pid"
    cgroup=$(cat "/proc/$pid/cgroup")
    expect_match "the agent is not in its unit's cgroup" "/system\.slice/$AGENT_UNIT\$" "$cgroup"
    expect_eq "the agent does not share PID 1's mount namespace" "$(readlink /proc/1/ns/mnt)" \
        "$(readlink "/proc/$pid/ns/mnt")"
    pass_note "the agent (pid $pid) is $AGENT_UNIT's MainPID, in its cgroup and PID 1's mount namespace"
}

# WHAT PID: NetworkManager still runs as PID (it was not restarted).
expect_nm_pid() {
    expect_eq "$1" "$2" "$(unit_pid NetworkManager.service)"
}

# ---- the guest's network --------------------------------------------------------------------------

# The OpenVPN server in namespace rig-inet, its veth end uplink0 in the guest's own namespace under
# NetworkManager with a static keyfile profile: the base connection NM needs to activate a VPN.
net_up() {
    rig_inet_serve 1
    cat >/etc/NetworkManager/system-connections/uplink.nmconnection <<EOF
[connection]
id=uplink
uuid=$(new_uuid)
type=ethernet
interface-name=uplink0
autoconnect=false

[ipv4]
method=manual
address1=$RIG_CLIENT_IP/30,$RIG_SERVER_IP
dns=$RIG_SERVER_IP;

[ipv6]
method=disabled
EOF
    chmod 600 /etc/NetworkManager/system-connections/uplink.nmconnection
    nmcli connection reload
    rig_wait 20 output_matches '^uplink0$' nmcli -g DEVICE device || rig_die "NetworkManager does not see uplink0"
    rig_log "NetworkManager sees uplink0: $(nmcli -g GENERAL.STATE device show uplink0)"
    nmcli device set uplink0 managed yes
    nmcli -w 30 connection up uplink >/dev/null || rig_die "the base connection did not come up: $(nmcli device)"
    rig_wait 10 grep -q "^nameserver $RIG_SERVER_IP" /etc/resolv.conf ||
        rig_die "NetworkManager did not write the uplink's DNS to /etc/resolv.conf"
    rig_wait 10 ping -c1 -W1 "$RIG_SERVER_IP" || rig_die "the server is not reachable over the underlay"
    rig_log "uplink0 up under NetworkManager; the OpenVPN server answers over it"
}

# After a failed step: whatever it left up or behind goes, so that the next step starts clean. The
# agent's record of a namespace deleted here goes too, or the purge would refuse for its lease.
tidy() {
    local name ns
    for name in $(nmcli -g NAME,TYPE connection show --active | sed -n 's/:vpn$//p'); do
        nmcli -w 30 connection down "$name" >/dev/null 2>&1 || true
    done
    rig_wait 15 sb_none "${VPN_PROCS[@]}" || true
    for ns in $(ip netns list | awk '$1 != "'"$RIG_INET"'" {print $1}'); do
        ip netns del "$ns"
        rm -rf "/etc/netns/$ns" "/run/nm-vpn-netns/$ns"
    done
}

# ---- the steps ------------------------------------------------------------------------------------

s1_install() {
    local nm_pid
    nm_pid=$(unit_pid NetworkManager.service)
    assert_nm_unit
    # What the purge must restore, byte for byte.
    cp "$STOCK_NAME" "$RIG_W/stock.name"
    expect_cmd_ok "installing $pkg_a failed" pkg_install "$pkg_a"
    expect_nm_pid "installing restarted NetworkManager" "$nm_pid"
    expect_sb_file_line "the installed .name does not point at the shim" \
        'program=/usr/lib/NetworkManager/nm-vpn-netns-service' "$STOCK_NAME"
    pass_note "installed $(basename "$pkg_a") while NetworkManager ran; NetworkManager kept pid $nm_pid"
}

# journald adds each line's identifier and pid itself; a line of ours that carries them again, or our
# own level tag, was formatted for a plain stderr.
assert_journal_lines() {
    local agent all
    agent=$(journalctl -q -b -u nm-vpn-netns-agent.service -o short --no-pager)
    expect_match "the agent's journal lacks its start line, with its identifier" \
        'nm-vpn-netns-agent\[[0-9]+\]: serving io\.github\.NmVpnNetns\.Agent1' "$agent"
    expect_no_match "an agent line carries a level tag" ': <(INFO|WARN|ERROR|DEBUG|TRACE)> ' "$agent"
    all=$(journalctl -q -b -o short --no-pager)
    expect_no_match "a journal line names one of our programs twice" \
        'nm-vpn-netns-(agent|service)\[[0-9]+\]: .*nm-vpn-netns-(agent|service)\[[0-9]+\]: ' "$all"
    pass_note "journal: $(grep -m1 -E 'nm-vpn-netns-agent\[[0-9]+\]: serving' <<<"$agent" | cut -d' ' -f5-)"
}

s2_isolated() {
    t_isolated_keyfile
    assert_agent_unit
    assert_journal_lines
    t_isolated_libnm
    assert_nm_unit
}

# systemctl's value of property $1 of the agent's unit.
agent_prop() { systemctl show -p "$1" --value "$AGENT_UNIT"; }

# The unit's hardening is in force, as systemctl reports it and as the kernel applies it to the agent.
assert_agent_hardening() {
    local pid p got status exposure
    pid=$(unit_pid "$AGENT_UNIT")
    for p in NoNewPrivileges=yes RestrictSUIDSGID=yes ProtectHostname=yes RestrictNamespaces=net \
        DevicePolicy=closed LockPersonality=yes MemoryDenyWriteExecute=yes RestrictRealtime=yes; do
        expect_eq "$AGENT_UNIT has ${p%%=*}=$(agent_prop "${p%%=*}")" "${p#*=}" "$(agent_prop "${p%%=*}")"
    done
    expect_match "$AGENT_UNIT does not refuse filtered calls with EPERM" '^(1|EPERM)$' "$(agent_prop SystemCallErrorNumber)"
    expect_match "$AGENT_UNIT does not deny every IP address" '(^| )0\.0\.0\.0/0( |$)' "$(agent_prop IPAddressDeny)"
    got=$(agent_prop SystemCallFilter | tr ' ' '\n' | sed 's/:.*//')
    for p in mount umount2 setns unshare; do
        expect_line "the system-call filter of $AGENT_UNIT does not allow $p" "$p" "$got"
    done
    expect_no_match "the system-call filter of $AGENT_UNIT allows a call the agent never makes" \
        '^(~.*|chroot|pivot_root|fsopen|move_mount|reboot|init_module|setuid|sched_setscheduler)$' "$got"
    status=$(cat "/proc/$pid/status")
    expect_match "the agent (pid $pid) runs without a seccomp filter" $'^Seccomp:\t2$' "$status"
    expect_match "the agent (pid $pid) may gain privileges" $'^NoNewPrivs:\t1$' "$status"
    expect_eq "the agent's CapBnd is not CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_KILL and CAP_SYS_PTRACE" \
        "$(caps_mask cap_sys_admin cap_net_admin cap_kill cap_sys_ptrace)" \
        "$(awk '/^CapBnd:/ {print $2}' <<<"$status")"
    expect_ne "the agent shares PID 1's UTS namespace despite ProtectHostname" "$(readlink /proc/1/ns/uts)" \
        "$(readlink "/proc/$pid/ns/uts")"
    exposure=$(systemd-analyze security --no-pager "$AGENT_UNIT" 2>&1 | grep -a 'Overall exposure level') || true
    exposure=${exposure##*: }
    expect_ne "systemd-analyze security gives no exposure level for $AGENT_UNIT" "" "$exposure"
    record "note systemd-analyze security $AGENT_UNIT: $exposure"
    pass_note "the hardening is in force (seccomp filter, no new privileges, own UTS namespace); systemd-analyze security: $exposure"
}

# A full isolate and release under the hardened unit, whose mount reaches a shell outside the unit.
s2b_hardened() {
    local before ns=hard
    before=$(rig_snapshot)
    isolated_up "$ns"
    assert_agent_unit
    assert_agent_hardening
    # Listed twice: `ip netns add` of the server's namespace made /run/netns a bind mount of itself
    # first, in the peer group of /run, so the namespace's mount propagates to /run below it too.
    expect_eq "/run/netns/$ns is not an nsfs mount for a shell outside the agent's unit" nsfs \
        "$(findmnt -n -o FSTYPE "/run/netns/$ns" | sort -u)"
    expect_eq "this shell is not in PID 1's mount namespace" "$(readlink /proc/1/ns/mnt)" "$(readlink /proc/self/ns/mnt)"
    pass_note "/run/netns/$ns is an nsfs mount in PID 1's mount namespace, outside the agent's unit"
    down_releases "$ns" "the hardened agent releases" "$before"
    rig_profile_delete "$ns"
}

s3_passthrough() { t_passthrough; }

# The command on a booted system: doctor on the package's installation, as root (which starts the
# agent through the real dbus-daemon and systemd) and as a user; status and exec with an isolated VPN
# up, exec's namespace checked against the negative control of the host's own.
s2c_cli() {
    local before inside host ns
    expect_cmd_ok "doctor fails on the package's installation" nm-vpn-netns doctor
    expect_no_match "doctor finds a problem on the package's installation" '^(FAIL|WARN) ' "$EXPECT_OUT"
    expect_match "doctor did not start and ask the agent" '^ok    agent: answered' "$EXPECT_OUT"
    expect_cmd_ok "doctor fails as a user" runuser -u nobody -- nm-vpn-netns doctor
    pass_note "doctor: nothing broken, as root (the agent answered) and as a user"
    before=$(rig_snapshot)
    isolated_up vm-cli
    expect_cmd_ok "status --json fails with vm-cli up" nm-vpn-netns status --json
    expect_match "status --json does not show vm-cli's namespace" '"netns": "vm-cli"' "$EXPECT_OUT"
    expect_match "status --json does not find vm-cli leak-free" '"leak_free": true' "$EXPECT_OUT"
    ns=$(stat -L -c %i /run/netns/vm-cli)
    host=$(stat -L -c %i /proc/self/ns/net)
    inside=$(nm-vpn-netns exec vm-cli -- stat -L -c %i /proc/self/ns/net)
    expect_ne "the host's namespace is vm-cli's (the control is void)" "$ns" "$host"
    expect_eq "exec did not enter vm-cli's namespace" "$ns" "$inside"
    pass_note "status shows vm-cli leak-free; exec runs in its namespace ($ns), not the host's ($host)"
    down_releases vm-cli "after status and exec" "$before"
}

# An isolated VPN `name` up (nmcli) and checked; the profile is created first when it does not exist.
isolated_up() {
    local name=$1 names
    names=$(nmcli -g NAME connection show)
    grep -qxF "$name" <<<"$names" || rig_profile_keyfile "$name" 1 ca netns-isolate=yes
    expect_cmd_ok "nmcli connection up $name failed" rig_up_nmcli "$name"
    assert_isolated "$name" "$name"
}

# `down` of `name` releases everything; WHY says what a failure means.
down_releases() {
    local name=$1 why=$2 before=$3
    printf '  down of %s: %s\n' "$name" "$why"
    expect_cmd_ok "nmcli connection down $name failed ($why)" rig_down_nmcli "$name"
    assert_gone "$name" "$before"
}

# A next `up` and `down` of `name` work as the first did.
up_down_again() {
    local name=$1 before=$2
    isolated_up "$name"
    expect_cmd_ok "nmcli connection down $name failed" rig_down_nmcli "$name"
    assert_gone "$name" "$before"
    pass_note "$name went up and down again"
}

s4_upgrade() {
    local before nm_pid old_agent agent
    before=$(rig_snapshot)
    isolated_up upgrade
    nm_pid=$(unit_pid NetworkManager.service)
    old_agent=$(unit_pid "$AGENT_UNIT")
    expect_cmd_ok "upgrading to $pkg_b failed" pkg_install "$pkg_b"
    expect_nm_pid "the upgrade restarted NetworkManager" "$nm_pid"
    pass_note "upgraded to $(dpkg-query -W -f '${Version}' nm-vpn-netns) with the VPN up; NetworkManager kept pid $nm_pid"
    expect_ping "the isolated VPN stopped answering across the upgrade" 10 rig_ns upgrade
    pass_note "the VPN still answers in its namespace (agent pid $old_agent before the upgrade, $(unit_pid "$AGENT_UNIT") now)"
    down_releases upgrade "the agent that held the lease across the upgrade releases it" "$before"
    # The package leaves an agent that holds a lease running through an upgrade, and that agent
    # exits after its last release, so that the next call starts the new binary.
    expect_within "the old agent (pid $old_agent) still runs after its last release: $(readlink "/proc/$old_agent/exe")" \
        10 pid_gone "$old_agent"
    pass_note "the old agent (pid $old_agent) exited after its last release"
    up_down_again upgrade "$before"
    agent=$(unit_pid "$AGENT_UNIT")
    expect_no_match "the agent after the upgrade runs a deleted (old) binary" '\(deleted\)$' "$(readlink "/proc/$agent/exe")"
    pass_note "the agent now runs the upgraded binary (pid $agent)"
    rig_profile_delete upgrade
}

s5_agent_killed() {
    local before pid
    before=$(rig_snapshot)
    isolated_up crash
    pid=$(unit_pid "$AGENT_UNIT")
    expect_ne "no agent runs with the VPN up" 0 "$pid"
    kill -9 "$pid"
    expect_within "the agent survived kill -9" 10 pid_gone "$pid"
    pass_note "agent pid $pid killed with SIGKILL while the VPN was up"
    down_releases crash "a restarted agent must adopt the live lease from its records (lease adoption)" "$before"
    up_down_again crash "$before"
    rig_profile_delete crash
}

s6_purge() {
    local nm_pid out rc=0 since said
    nm_pid=$(unit_pid NetworkManager.service)
    expect_cmd_ok "purging nm-vpn-netns failed" pkg_purge
    expect_nm_pid "the purge restarted NetworkManager" "$nm_pid"
    expect_cmd_ok "the purge did not restore the stock .name byte for byte" cmp "$STOCK_NAME" "$RIG_W/stock.name"
    expect_eq "the purge left a diversion" "" "$(dpkg-divert --list "$STOCK_NAME")"
    expect_sb_absent "the purge left $STOCK_NAME.distrib" "$STOCK_NAME.distrib"
    expect_ne "an idle agent still runs after the purge" active "$(systemctl is-active "$AGENT_UNIT")"
    pass_note "purged; the stock .name is back byte for byte, no diversion, no agent running"

    rig_profile_keyfile plain 3 ca
    stock_vpn_roundtrip plain nmcli
    rig_profile_delete plain
    pass_note "after the purge, a stock VPN works"

    # The stock plugin gets the profile with the netns-* keys, which it refuses as unknown.
    rig_profile_keyfile closed 1 ca netns-isolate=yes
    since=$(date +%s)
    out=$(rig_up_nmcli closed 2>&1) || rc=$?
    printf '    nmcli connection up closed (rc %s): %s\n' "$rc" "$out"
    said=$(journalctl -q -u NetworkManager.service --since "@$since" --no-pager | grep -F 'netns-isolate') ||
        expect_failed "NM's log does not say that the stock plugin refused netns-isolate" \
            "a line with netns-isolate" "$(journalctl -q -u NetworkManager.service --since "@$since" --no-pager)"
    expect_match "the stock plugin did not refuse the isolated profile" 'invalid or not supported' "$said"
    record "note after the purge, an isolated profile: nmcli up exits $rc; NM: ${said##*]: }"
    expect_no_ping "after the purge, the isolated profile reaches the tunnel from the root namespace" rig_sb
    assert_root_clean
    expect_eq "after the purge, the isolated profile made a namespace" "$RIG_INET" "$(ip netns list | awk '{print $1}')"
    expect_ne "after the purge, the isolated profile activated" activated "$(rig_state closed)"
    pass_note "after the purge, the isolated profile fails closed: the stock plugin refuses it, no VPN route, address or DNS"
    rig_down_nmcli closed >/dev/null 2>&1 || true
    rig_profile_delete closed
}

run_step() {
    local name=$1 t0=$SECONDS rc
    shift
    # NM_VPN_NETNS_VM_STEPS of run.sh: only these steps, after install.
    if [[ -n ${VM_STEPS:-} && $name != install && " $VM_STEPS " != *" $name "* ]]; then
        record "SKIP $name"
        return 0
    fi
    echo "=== $name"
    (set -eE; "$@") 2>&1
    rc=$?
    if ((rc == 0)); then
        record "PASS $name"
        echo "PASS $name ($((SECONDS - t0)) s)"
    else
        record "FAIL $name"
        echo "FAIL $name ($((SECONDS - t0)) s)"
        rig_dump_logs
        tidy
    fi
    return "$rc"
}

main() {
    mkdir -p "$RIG_W"
    : >"$RESULTS"
    local os
    os=$(. /etc/os-release && echo "$PRETTY_NAME")
    version distribution "$os"
    version kernel "$(uname -r)"
    version systemd "$(dpkg-query -W -f '${Version}' systemd)"
    version NetworkManager "$(NetworkManager --version)"
    version network-manager-openvpn "$(dpkg-query -W -f '${Version}' network-manager-openvpn)"
    version openvpn "$(dpkg-query -W -f '${Version}' openvpn)"
    rig_log "$os, kernel $(uname -r), systemd $(dpkg-query -W -f '${Version}' systemd), NetworkManager $(NetworkManager --version)"
    if ! (set -e; net_up); then
        record "FAIL setup"
        rig_dump_logs
        return
    fi
    run_step install s1_install || return
    run_step isolated s2_isolated
    run_step hardened s2b_hardened
    run_step cli s2c_cli
    run_step passthrough s3_passthrough
    run_step upgrade s4_upgrade
    run_step agent-killed s5_agent_killed
    run_step netns-deleted f1_netns_deleted
    run_step quick-reconnect f2_quick_reconnect
    run_step shim-killed f3_shim_killed
    run_step stock-stopped f4_stock_stopped
    # Each local-user case runs on its own; all need bob's session.
    if run_step local-user-session ul_session; then
        run_step local-user-foreign-netns ul_foreign_netns
        run_step local-user-foreign-etc ul_foreign_etc
        run_step local-user-path ul_path_name
        run_step local-user-prefixed ul_prefixed
    fi
    ul_end
    run_step purge s6_purge
}

main
record "END"
