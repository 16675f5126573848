# shellcheck shell=bash
# End-to-end scenarios, one function each (t_NAME). run.sh runs them in order inside one rig,
# each in a subshell with `set -e`. A scenario must leave the sandbox as it found it.

# The helpers (expect_*, pass_note, fail, rig_*) are in lib/, loaded by rig.sh.

# A process NetworkManager spawns inherits NetworkManager.service's sandbox: no CAP_SYS_ADMIN, so it
# cannot make a namespace, and a mount namespace of its own. The whole privilege split rests on this.
t_nm_constraints() {
    local capbnd
    capbnd=$(rig_sb awk '/^CapBnd/ {print $2}' "/proc/$RIG_NM_PID/status")
    expect_eq "NetworkManager's CapBnd is not NetworkManager.service's" "$RIG_NM_CAPBND" "$capbnd"
    pass_note "NetworkManager runs with CapBnd $capbnd (NetworkManager.service's set)"
    expect_ne "NetworkManager shares the sandbox's main mount namespace" \
        "$(rig_sb readlink /proc/self/ns/mnt)" "$(rig_sb readlink "/proc/$RIG_NM_PID/ns/mnt")"
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
    # NM picks a new .name file up through inotify, a moment after it appears: until then the
    # activation fails with "not installed", so try again within a bound.
    rigcaps_ran() {
        rig_sb nmcli -w 15 connection up rigcaps >/dev/null 2>&1
        test -s "$RIG_W/rigcaps.out"
    }
    expect_within "NetworkManager never ran the test plugin" 10 rigcaps_ran
    rig_profile_delete rigcaps
    rig_sb rm -f /etc/NetworkManager/VPN/rigcaps.name
    local report
    report=$(cat "$RIG_W/rigcaps.out")
    sed 's/^/    plugin: /' "$RIG_W/rigcaps.out"

    capbnd=$(awk '/^CapBnd/ {print $2}' <<<"$report")
    (((0x$capbnd >> 21) & 1)) &&
        expect_failed "a plugin spawned by NM has CAP_SYS_ADMIN" "a CapBnd without bit 21 (CAP_SYS_ADMIN)" "$report"
    pass_note "a plugin spawned by NM has CapBnd $capbnd: no CAP_SYS_ADMIN"
    expect_not_contains "unshare(CLONE_NEWNET) succeeded in a plugin" 'unshare-rc=0' "$report"
    expect_contains "unshare(CLONE_NEWNET) did not fail with EPERM" 'Operation not permitted' "$report"
    pass_note "unshare(CLONE_NEWNET) fails with EPERM in a plugin"
    expect_contains "the plugin does not share NetworkManager's mount namespace" \
        "mnt=$(rig_sb readlink "/proc/$RIG_NM_PID/ns/mnt")" "$report"
    pass_note "the plugin inherits NetworkManager's mount namespace"
}

# Activates a stock (unisolated) VPN with $2 (nmcli|libnm), proves the tunnel with a ping that fails
# before and after, and that nothing of the VPN remains once it is down.
stock_vpn_roundtrip() {
    local name=$1 how=$2 before dns
    before=$(rig_snapshot)
    expect_no_ping "the server's tunnel address answers before the VPN is up (negative control)" rig_sb
    pass_note "before activation, $RIG_TUN_SERVER_IP is unreachable from the sandbox"

    expect_cmd_ok "activation by $how failed" "rig_up_$how" "$name"
    expect_activated "NM does not report $name activated" "$name"
    pass_note "NM reports $name activated ($how)"
    rig_sb nmcli -g IP4.ADDRESS,IP4.DNS,IP4.DOMAIN connection show "$name" | sed 's/^/    nmcli: /'
    dns=$(rig_sb nmcli -g IP4.DNS connection show "$name")
    expect_line "NM did not take the pushed DNS" "$RIG_TUN_SERVER_IP" "$dns"
    expect_ping "no ping to $RIG_TUN_SERVER_IP through the VPN" 10 rig_sb
    pass_note "$RIG_TUN_SERVER_IP answers through the tunnel"

    expect_cmd_ok "deactivation by $how failed" "rig_down_$how" "$name"
    expect_vpn_gone
    expect_no_ping "$RIG_TUN_SERVER_IP still answers after down" rig_sb
    expect_snapshot "the sandbox's root namespace differs from before activation" "$before"
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
    local before out rc=0 log reason
    before=$(rig_snapshot)
    rig_profile_keyfile broken-ca 3 wrong-ca timeout=10
    out=$(rig_up_nmcli broken-ca 2>&1) || rc=$?
    echo "$out" | sed 's/^/    nmcli: /'
    ((rc != 0)) || expect_failed "a VPN with the wrong CA activated" "nmcli to fail" "$out"
    expect_contains "nmcli gave no reason" 'Connection activation failed' "$out"
    log=$(grep -E "vpn.*broken-ca|broken-ca.*(fail|state)" "$RIG_W/nm.log") || true
    [[ -z $log ]] || tail -3 <<<"$log" | sed 's/^/    NM log: /'
    reason=$(grep -o 'Connection activation failed.*' <<<"$out") || true
    pass_note "activation failed with NM's reason: ${reason%%$'\n'*}"
    rig_profile_delete broken-ca
    expect_vpn_gone "openvpn still runs after the failed activation"
    expect_snapshot "the failed activation left something behind" "$before"
    pass_note "nothing left behind"
}

# ---- the agent, called over the sandbox's system bus as the plugin will call it ------------------

# The client and its helpers (agent_client, agent_say, agent_end, expect_json) are in lib/agent.sh.

t_agent_isolates_from_nm_context() {
    local ns=agent-test before out listener addrs
    before=$(rig_snapshot)
    agent_client --tun rigtun0 --id "agent test" --uuid "$(new_uuid)" \
        --settings "netns-isolate=yes,netns-name=$ns" --addr4 198.19.0.2/24 --dns4 "$RIG_TUN_SERVER_IP" \
        --domain "$RIG_DNS_DOMAIN" --addr6 fd00:198:19::1000/64
    out=$(agent_say "")
    echo "    Isolate: $out"
    expect_json "Isolate failed" netns "$ns" "$out"
    pass_note "the bus activated the agent; Isolate answered a caller without CAP_SYS_ADMIN"

    expect_netns "namespace $ns is not visible from the sandbox's main mount namespace" "$ns"
    pass_note "/run/netns/$ns is visible where a user's shell is"
    expect_cmd_fails "the tun is still in the root namespace" rig_sb ip link show rigtun0
    rig_sb ip -n "$ns" -br addr show | sed 's/^/    ip -n: /'
    addrs=$(rig_sb ip -n "$ns" addr show dev rigtun0 2>&1)
    expect_contains "no IPv4 address in $ns" 'inet 198.19.0.2/24' "$addrs"
    expect_contains "no IPv6 address in $ns" 'inet6 fd00:198:19::1000/64' "$addrs"
    expect_match "no default route via the tun in $ns" '^default .*dev rigtun0' "$(rig_sb ip -n "$ns" route show 2>&1)"
    expect_match "no IPv6 default route via the tun in $ns" '^default .*dev rigtun0' "$(rig_sb ip -n "$ns" -6 route show 2>&1)"
    expect_contains "lo is down in $ns" 'state UNKNOWN' "$(rig_sb ip -n "$ns" link show lo 2>&1)"
    expect_sb_file_line "resolv.conf lacks the VPN's DNS" "nameserver $RIG_TUN_SERVER_IP" "/etc/netns/$ns/resolv.conf"
    expect_sb_file_line "resolv.conf lacks the VPN's domain" "search $RIG_DNS_DOMAIN" "/etc/netns/$ns/resolv.conf"
    expect_match "nsswitch.conf does not say hosts: files dns" '^hosts: *files dns$' \
        "$(rig_sb cat "/etc/netns/$ns/nsswitch.conf" 2>&1)"
    pass_note "in $ns: the tun with its addresses, default routes, lo up, resolv.conf and nsswitch.conf"

    # Traffic written to the tun by its holder arrives in the namespace, as openvpn's would.
    rig_ns "$ns" timeout 10 /usr/bin/python3 -c '
import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.19.0.2", 5555))
print(s.recv(100).decode())' >"$RIG_W/udp.out" 2>&1 &
    listener=$!
    expect_match_within "no listener in $ns" 5 5555 rig_ns "$ns" ss -Hlun
    agent_say "send 198.19.0.2 5555 through-the-tunnel" >/dev/null
    wait "$listener"
    expect_line "a packet written to the tun did not arrive in $ns" through-the-tunnel "$(cat "$RIG_W/udp.out")"
    pass_note "a packet written to the held tun fd arrived at a socket in $ns"

    out=$(agent_say "release $ns")
    expect_json "Release failed" released "$ns" "$out"
    agent_end
    expect_netns_gone "/run/netns/$ns remains after Release" "$ns"
    expect_sb_absent "/etc/netns/$ns remains after Release" "/etc/netns/$ns"
    expect_snapshot "Release left something behind" "$before"
    pass_note "after Release: no namespace, no /etc/netns/$ns, nothing else changed"
}

t_agent_releases_when_caller_dies() {
    local ns=agent-crash out
    agent_client --tun rigtun1 --id crash --uuid "$(new_uuid)" \
        --settings "netns-isolate=yes,netns-name=$ns" --addr4 198.19.0.3/24
    out=$(agent_say "")
    expect_json "Isolate failed" netns "$ns" "$out"
    rig_sb kill -9 "$(json_field "$out" client-pid)"
    agent_end
    expect_netns_gone "the agent kept $ns after its caller was killed" "$ns" 10
    expect_sb_absent "/etc/netns/$ns remains after the caller died" "/etc/netns/$ns" 10
    pass_note "killing the caller mid-lease made the agent release $ns"
}

# Each refusal names the problem and leaves nothing behind.
t_agent_refusals() {
    local before out uuid first_pid first_in first_out
    before=$(rig_snapshot)
    uuid=$(new_uuid)

    # One VPN per namespace.
    agent_client --tun rigtun2 --id first --uuid "$uuid" --settings netns-isolate=yes,netns-name=leased --addr4 198.19.0.4/24
    out=$(agent_say "")
    expect_json "Isolate failed" netns leased "$out"
    first_pid=$AGENT_CLIENT_PID first_in=$AGENT_CLIENT_IN first_out=$AGENT_CLIENT_OUT
    # Another connection: the same one would be a reconnect, which waits for its own lease.
    agent_client --tun rigtun3 --id second --uuid "$(new_uuid)" --settings netns-isolate=yes,netns-name=leased --addr4 198.19.0.5/24
    out=$(agent_say "")
    agent_end
    echo "    second lease: $out"
    expect_json "a second lease was not refused as InUse" error io.github.NmVpnNetns.Agent1.Error.InUse "$out"
    echo exit >&"$first_in"
    exec {first_in}>&- {first_out}<&-
    wait "$first_pid"
    expect_netns_gone "namespace 'leased' remains" leased 10
    pass_note "a second VPN on a leased namespace is refused (InUse)"

    # A user's connection gets a name of its own (u<UID>-NAME), so it never reaches the
    # administrator's namespace or /etc/netns entry of the name it asked for. Root is the user
    # every sandbox has.
    rig_sb ip netns add foreign
    rig_sb sh -c 'mkdir -p /etc/netns/foreign && echo "nameserver 192.0.2.53" >/etc/netns/foreign/resolv.conf'
    agent_client --tun rigtun4 --id mine --uuid "$uuid" --permissions user:root \
        --settings netns-isolate=yes,netns-name=foreign --addr4 198.19.0.6/24
    out=$(agent_say "")
    agent_end
    echo "    prefixed: $out"
    expect_json "a user's namespace was not prefixed" netns u0-foreign "$out"
    expect_netns_gone "namespace 'u0-foreign' remains" u0-foreign 10
    pass_note "a user's connection asking for netns-name=foreign gets u0-foreign"

    # With names as given, a user's connection may not touch a namespace or an /etc/netns entry
    # the agent did not create; nor may a system connection use a namespace the policy does not
    # list.
    rig_sb sh -c 'mkdir -p /etc/nm-vpn-netns && printf "[agent]\nuser-namespace-names=as-given\n" >/etc/nm-vpn-netns/agent.conf'
    local ns tun
    for ns in foreign admin-dns; do
        tun=rigtun7
        if [[ $ns == admin-dns ]]; then
            tun=rigtun8
            rig_sb sh -c 'mkdir -p /etc/netns/admin-dns && echo "nameserver 192.0.2.53" >/etc/netns/admin-dns/resolv.conf'
        fi
        agent_client --tun "$tun" --id mine --uuid "$uuid" --permissions user:alice \
            --settings "netns-isolate=yes,netns-name=$ns" --addr4 198.19.0.6/24
        out=$(agent_say "")
        agent_end
        echo "    user, $ns: $out"
        expect_json "a user connection got $ns" error io.github.NmVpnNetns.Agent1.Error.AccessDenied "$out"
        expect_eq "the admin's resolv.conf of $ns was touched" "nameserver 192.0.2.53" \
            "$(rig_sb cat /etc/netns/$ns/resolv.conf)"
    done
    expect_netns_gone "a namespace was made for the refused admin-dns" admin-dns
    rig_sb rm -r /etc/netns/admin-dns
    agent_client --tun rigtun9 --id system --uuid "$uuid" --settings netns-isolate=yes,netns-name=foreign --addr4 198.19.0.6/24
    out=$(agent_say "")
    agent_end
    echo "    system, foreign: $out"
    expect_json "a system connection got a foreign namespace not listed" error io.github.NmVpnNetns.Agent1.Error.AccessDenied "$out"
    rig_sb rm -r /etc/nm-vpn-netns /etc/netns/foreign
    rig_sb ip netns del foreign
    pass_note "a user's connection cannot use the admin's namespace or /etc/netns entry; a system one only a listed foreign namespace"

    # Only a tun may be moved: a veth is refused before anything happens.
    rig_sb ip link add rigveth0 type veth peer name rigveth1
    agent_client --tun rigveth0 --existing --id veth --uuid "$uuid" --settings netns-isolate=yes,netns-name=veth --addr4 198.19.0.7/24
    out=$(agent_say "")
    agent_end
    echo "    veth: $out"
    [[ -n $(json_field "$out" error) ]] || expect_failed "a veth was isolated" 'an answer with an "error"' "$out"
    expect_cmd_ok "the veth left the root namespace" rig_sb ip link show rigveth0
    rig_sb ip link del rigveth0
    expect_netns_gone "a namespace was left for the refused veth" veth
    pass_note "a veth is refused and stays where it was"

    # A hostile name never reaches the file system.
    agent_client --tun rigtun5 --id hostile --uuid "$uuid" --settings 'netns-isolate=yes,netns-name=../etc' --addr4 198.19.0.8/24
    out=$(agent_say "")
    agent_end
    echo "    ../etc: $out"
    expect_json "netns-name=../etc was not refused" error io.github.NmVpnNetns.Agent1.Error.InvalidArgs "$out"
    pass_note "netns-name=../etc is refused as InvalidArgs"

    # Only root may call: the bus policy refuses others, and so does the agent itself.
    rig_sb ip tuntap add dev rigtun6 mode tun
    agent_client_as_nobody --tun rigtun6 --existing --id nobody --uuid "$uuid" --addr4 198.19.0.9/24
    out=$(agent_say "")
    agent_end
    echo "    uid 65534, stock policy: $out"
    expect_json "the bus let a non-root caller through" error org.freedesktop.DBus.Error.AccessDenied "$out"
    echo '<busconfig><policy context="default"><allow send_destination="io.github.NmVpnNetns.Agent1"/></policy></busconfig>' |
        rig_sb sh -c 'cat >/etc/dbus-1/system.d/zz-rig-open.conf'
    bus_reload
    agent_client_as_nobody --tun rigtun6 --existing --id nobody --uuid "$uuid" --addr4 198.19.0.9/24
    out=$(agent_say "")
    agent_end
    rig_sb rm /etc/dbus-1/system.d/zz-rig-open.conf
    bus_reload
    echo "    uid 65534, policy opened: $out"
    expect_json "the agent let a non-root caller through" error io.github.NmVpnNetns.Agent1.Error.AccessDenied "$out"
    rig_sb ip link del rigtun6
    pass_note "a non-root caller is refused by the bus policy, and by the agent when the policy is open"

    expect_snapshot "a refusal left something behind" "$before"
    pass_note "nothing left behind"
}

E2E_TESTS=(t_nm_constraints t_stock_vpn_nmcli t_stock_vpn_libnm_keyfile t_broken_ca_fails
    t_agent_isolates_from_nm_context t_agent_releases_when_caller_dies t_agent_refusals)
# The stock VPN's tun has addresses, routes and DNS in the root namespace: no leak monitor (lib/leak.sh).
E2E_UNISOLATED+=(t_stock_vpn_nmcli t_stock_vpn_libnm_keyfile t_broken_ca_fails)
