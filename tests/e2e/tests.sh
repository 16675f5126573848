# shellcheck shell=bash
# End-to-end scenarios, one function each (t_NAME). run.sh runs them in order inside one rig,
# each in a subshell with `set -e`. A scenario must leave the sandbox as it found it.

pass_note() { printf '  ok: %s\n' "$*"; }
fail() {
    printf '  FAILED: %s\n' "$*"
    exit 1
}

# The probe every "traffic goes through the VPN" check uses, so the negative control is the same probe.
probe_ping() { "$@" ping -c1 -W1 -q "$RIG_TUN_SERVER_IP" >/dev/null 2>&1; }
probe_ping_within() { # seconds, then the command prefix
    local secs=$1
    shift
    rig_wait "$secs" probe_ping "$@"
}

# A process NetworkManager spawns inherits NetworkManager.service's sandbox: no CAP_SYS_ADMIN, so it
# cannot make a namespace, and a mount namespace of its own. The whole privilege split rests on this.
t_nm_constraints() {
    local capbnd
    capbnd=$(rig_sb awk '/^CapBnd/ {print $2}' "/proc/$RIG_NM_PID/status")
    [[ $capbnd == "$RIG_NM_CAPBND" ]] || fail "NetworkManager's CapBnd is $capbnd, expected $RIG_NM_CAPBND"
    pass_note "NetworkManager runs with CapBnd $capbnd (NetworkManager.service's set)"
    [[ $(rig_sb readlink "/proc/$RIG_NM_PID/ns/mnt") != $(rig_sb readlink /proc/self/ns/mnt) ]] ||
        fail "NetworkManager shares the sandbox's main mount namespace"
    pass_note "NetworkManager has a mount namespace of its own"

    # A throwaway VPN plugin whose program reports what a plugin may do, then exits.
    cat >"$RIG_W/rigcaps.sh" <<EOF
#!/bin/sh
{
    grep '^CapBnd' /proc/self/status
    echo "mnt=\$(readlink /proc/self/ns/mnt)"
    unshare --net true 2>&1
    echo "unshare-rc=\$?"
} >$RIG_IN/rigcaps.out
EOF
    chmod 755 "$RIG_W/rigcaps.sh"
    rig_sb sh -c "printf '[VPN Connection]\nname=rigcaps\nservice=org.freedesktop.NetworkManager.rigcaps\nprogram=$RIG_IN/rigcaps.sh\n' \
        >/etc/NetworkManager/VPN/rigcaps.name"
    rig_sb sh -c "umask 077 && printf '[connection]\nid=rigcaps\nuuid=%s\ntype=vpn\nautoconnect=false\n\n[vpn]\nservice-type=org.freedesktop.NetworkManager.rigcaps\n\n[ipv4]\nmethod=auto\n' \
        \$(cat /proc/sys/kernel/random/uuid) >/etc/NetworkManager/system-connections/rigcaps.nmconnection && nmcli connection reload"
    rig_sb nmcli -w 15 connection up rigcaps >/dev/null 2>&1 || true
    rig_wait 10 test -s "$RIG_W/rigcaps.out" || fail "NetworkManager never ran the test plugin"
    rig_profile_delete rigcaps
    rig_sb rm -f /etc/NetworkManager/VPN/rigcaps.name
    sed 's/^/    plugin: /' "$RIG_W/rigcaps.out"

    capbnd=$(awk '/^CapBnd/ {print $2}' "$RIG_W/rigcaps.out")
    (((0x$capbnd >> 21) & 1)) && fail "a plugin spawned by NM has CAP_SYS_ADMIN (CapBnd $capbnd)"
    pass_note "a plugin spawned by NM has CapBnd $capbnd: no CAP_SYS_ADMIN"
    grep -q 'unshare-rc=0' "$RIG_W/rigcaps.out" && fail "unshare(CLONE_NEWNET) succeeded in a plugin"
    grep -q 'Operation not permitted' "$RIG_W/rigcaps.out" || fail "unshare(CLONE_NEWNET) did not fail with EPERM"
    pass_note "unshare(CLONE_NEWNET) fails with EPERM in a plugin"
    grep -qF "mnt=$(rig_sb readlink "/proc/$RIG_NM_PID/ns/mnt")" "$RIG_W/rigcaps.out" ||
        fail "the plugin does not share NetworkManager's mount namespace"
    pass_note "the plugin inherits NetworkManager's mount namespace"
}

# Activates a stock (unisolated) VPN with $2 (nmcli|libnm), proves the tunnel with a ping that fails
# before and after, and that nothing of the VPN remains once it is down.
stock_vpn_roundtrip() {
    local name=$1 how=$2 before out
    before=$(rig_snapshot)
    probe_ping rig_sb && fail "the server's tunnel address answers before the VPN is up (negative control)"
    pass_note "before activation, $RIG_TUN_SERVER_IP is unreachable from the sandbox"

    out=$("rig_up_$how" "$name" 2>&1) || fail "activation by $how failed: $out"
    [[ $(rig_state "$name") == activated ]] || fail "NM reports $name as '$(rig_state "$name")'"
    pass_note "NM reports $name activated ($how)"
    rig_sb nmcli -g IP4.ADDRESS,IP4.DNS,IP4.DOMAIN connection show "$name" | sed 's/^/    nmcli: /'
    rig_sb nmcli -g IP4.DNS connection show "$name" | grep -qx "$RIG_TUN_SERVER_IP" || fail "NM did not take the pushed DNS"
    probe_ping_within 10 rig_sb || fail "no ping to $RIG_TUN_SERVER_IP through the VPN"
    pass_note "$RIG_TUN_SERVER_IP answers through the tunnel"

    out=$("rig_down_$how" "$name" 2>&1) || fail "deactivation by $how failed: $out"
    rig_wait_openvpn_gone || fail "openvpn still runs after down"
    probe_ping rig_sb && fail "$RIG_TUN_SERVER_IP still answers after down"
    diff <(echo "$before") <(rig_snapshot) || fail "the sandbox's root namespace differs from before activation"
    pass_note "after down: no route, address, DNS or process of the VPN remains"
}

t_stock_vpn_nmcli() {
    rig_profile_nmcli stock-nmcli 1
    stock_vpn_roundtrip stock-nmcli nmcli
    rig_profile_delete stock-nmcli
}

t_stock_vpn_libnm_keyfile() {
    rig_profile_keyfile stock-libnm 2 ca
    stock_vpn_roundtrip stock-libnm libnm
    rig_profile_delete stock-libnm
}

# A profile meant to fail: the server's certificate does not match the CA, so openvpn keeps
# retrying until vpn.timeout. The activation must fail, and NM's reason must reach the output.
t_broken_ca_fails() {
    local before out rc=0
    before=$(rig_snapshot)
    rig_profile_keyfile broken-ca 3 wrong-ca timeout=10
    out=$(rig_up_nmcli broken-ca 2>&1) || rc=$?
    echo "$out" | sed 's/^/    nmcli: /'
    ((rc != 0)) || fail "a VPN with the wrong CA activated"
    echo "$out" | grep -q 'Connection activation failed' || fail "nmcli gave no reason"
    grep -E "vpn.*broken-ca|broken-ca.*(fail|state)" "$RIG_W/nm.log" | tail -3 | sed 's/^/    NM log: /'
    pass_note "activation failed with NM's reason: $(echo "$out" | grep -o 'Connection activation failed.*' | head -1)"
    rig_profile_delete broken-ca
    rig_wait_openvpn_gone || fail "openvpn still runs after the failed activation"
    diff <(echo "$before") <(rig_snapshot) || fail "the failed activation left something behind"
    pass_note "nothing left behind"
}

E2E_TESTS=(t_nm_constraints t_stock_vpn_nmcli t_stock_vpn_libnm_keyfile t_broken_ca_fails)
