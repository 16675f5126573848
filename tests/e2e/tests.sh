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
    # NM picks a new .name file up through inotify, a moment after it appears: until then the
    # activation fails with "not installed", so try again within a bound.
    rigcaps_ran() {
        rig_sb nmcli -w 15 connection up rigcaps >/dev/null 2>&1
        test -s "$RIG_W/rigcaps.out"
    }
    rig_wait 10 rigcaps_ran || fail "NetworkManager never ran the test plugin"
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

# ---- the agent, called over the sandbox's system bus as the plugin will call it ------------------

# Starts tests/e2e/agent-client.py in NetworkManager's context as coprocess AGENT; arguments go to it.
agent_client() {
    coproc AGENT { rig_nm_ctx /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/agent-client.py" "$@" 2>&1; }
}
# The same as uid 65534, from the sandbox's main namespace; from a copy in the work dir, because
# the source tree may be private to root (a CI checkout in a mktemp directory is).
agent_client_as_nobody() {
    install -m 644 "$here/agent-client.py" "$RIG_W/agent-client.py"
    coproc AGENT { rig_sb setpriv --reuid 65534 --regid 65534 --clear-groups \
        /usr/bin/python3 "$RIG_IN/agent-client.py" "$@" 2>&1; }
}
# Sends a command to the client (none: just read) and prints its one-line JSON answer.
agent_say() {
    local line
    [[ -z $1 ]] || echo "$1" >&"${AGENT[1]}"
    read -r -t 30 line <&"${AGENT[0]}" || fail "the agent client did not answer"
    echo "$line"
}
agent_end() {
    echo exit >&"${AGENT[1]}" 2>/dev/null
    wait "$AGENT_PID" 2>/dev/null || true
}
# Field $2 of the JSON object $1; empty when $1 is not JSON (the client failed before answering).
json_field() {
    /usr/bin/python3 -c '
import json, sys
try:
    print(json.loads(sys.argv[1]).get(sys.argv[2], ""))
except ValueError:
    pass' "$1" "$2"
}
netns_exists() { rig_sb test -e "/run/netns/$1"; }
new_uuid() { cat /proc/sys/kernel/random/uuid; }
bus_reload() { rig_sb dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig; }

t_agent_isolates_from_nm_context() {
    local ns=agent-test before out listener
    before=$(rig_snapshot)
    agent_client --tun rigtun0 --id "agent test" --uuid "$(new_uuid)" \
        --settings "netns-isolate=yes,netns-name=$ns" --addr4 198.19.0.2/24 --dns4 "$RIG_TUN_SERVER_IP" \
        --domain "$RIG_DNS_DOMAIN" --addr6 fd00:198:19::1000/64
    out=$(agent_say "")
    echo "    Isolate: $out"
    [[ $(json_field "$out" netns) == "$ns" ]] || fail "Isolate failed: $out"
    pass_note "the bus activated the agent; Isolate answered a caller without CAP_SYS_ADMIN"

    rig_sb ip netns list | grep -q "^$ns\b" || fail "namespace $ns is not visible from the sandbox's main mount namespace"
    pass_note "/run/netns/$ns is visible where a user's shell is"
    rig_sb ip link show rigtun0 >/dev/null 2>&1 && fail "the tun is still in the root namespace"
    rig_sb ip -n "$ns" -br addr show | sed 's/^/    ip -n: /'
    rig_sb ip -n "$ns" -4 addr show dev rigtun0 | grep -q 'inet 198.19.0.2/24' || fail "no IPv4 address in $ns"
    rig_sb ip -n "$ns" -6 addr show dev rigtun0 | grep -q 'inet6 fd00:198:19::1000/64' || fail "no IPv6 address in $ns"
    rig_sb ip -n "$ns" route show | grep -q '^default .*dev rigtun0' || fail "no default route via the tun in $ns"
    rig_sb ip -n "$ns" -6 route show | grep -q '^default .*dev rigtun0' || fail "no IPv6 default route via the tun in $ns"
    rig_sb ip -n "$ns" link show lo | grep -q 'state UNKNOWN' || fail "lo is down in $ns"
    rig_sb grep -qx "nameserver $RIG_TUN_SERVER_IP" "/etc/netns/$ns/resolv.conf" || fail "resolv.conf lacks the VPN's DNS"
    rig_sb grep -qx "search $RIG_DNS_DOMAIN" "/etc/netns/$ns/resolv.conf" || fail "resolv.conf lacks the VPN's domain"
    rig_sb grep -qx 'hosts: *files dns' "/etc/netns/$ns/nsswitch.conf" || fail "nsswitch.conf does not say hosts: files dns"
    pass_note "in $ns: the tun with its addresses, default routes, lo up, resolv.conf and nsswitch.conf"

    # Traffic written to the tun by its holder arrives in the namespace, as openvpn's would.
    rig_ns "$ns" timeout 10 /usr/bin/python3 -c '
import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("198.19.0.2", 5555))
print(s.recv(100).decode())' >"$RIG_W/udp.out" 2>&1 &
    listener=$!
    rig_wait 5 sh -c "nsenter -t $RIG_SB_PID -m -n -p -- ip netns exec $ns ss -Hlun | grep -q 5555" || fail "no listener in $ns"
    agent_say "send 198.19.0.2 5555 through-the-tunnel" >/dev/null
    wait "$listener"
    grep -qx through-the-tunnel "$RIG_W/udp.out" || fail "a packet written to the tun did not arrive in $ns: $(cat "$RIG_W/udp.out")"
    pass_note "a packet written to the held tun fd arrived at a socket in $ns"

    out=$(agent_say "release $ns")
    [[ $(json_field "$out" released) == "$ns" ]] || fail "Release failed: $out"
    agent_end
    netns_exists "$ns" && fail "/run/netns/$ns remains after Release"
    rig_sb test -e "/etc/netns/$ns" && fail "/etc/netns/$ns remains after Release"
    diff <(echo "$before") <(rig_snapshot) || fail "Release left something behind"
    pass_note "after Release: no namespace, no /etc/netns/$ns, nothing else changed"
}

t_agent_releases_when_caller_dies() {
    local ns=agent-crash out
    agent_client --tun rigtun1 --id crash --uuid "$(new_uuid)" \
        --settings "netns-isolate=yes,netns-name=$ns" --addr4 198.19.0.3/24
    out=$(agent_say "")
    [[ $(json_field "$out" netns) == "$ns" ]] || fail "Isolate failed: $out"
    rig_sb kill -9 "$(json_field "$out" client-pid)"
    wait "$AGENT_PID" 2>/dev/null || true
    rig_wait 10 sh -c "! nsenter -t $RIG_SB_PID -m -- test -e /run/netns/$ns" ||
        fail "the agent kept $ns after its caller was killed"
    rig_sb test -e "/etc/netns/$ns" && fail "/etc/netns/$ns remains after the caller died"
    pass_note "killing the caller mid-lease made the agent release $ns"
}

# Each refusal names the problem and leaves nothing behind.
t_agent_refusals() {
    local before out uuid first_pid first_in
    before=$(rig_snapshot)
    uuid=$(new_uuid)

    # One VPN per namespace.
    agent_client --tun rigtun2 --id first --uuid "$uuid" --settings netns-isolate=yes,netns-name=leased --addr4 198.19.0.4/24
    out=$(agent_say "")
    [[ $(json_field "$out" netns) == leased ]] || fail "Isolate failed: $out"
    first_pid=$AGENT_PID
    exec {first_in}>&"${AGENT[1]}"
    agent_client --tun rigtun3 --id second --uuid "$uuid" --settings netns-isolate=yes,netns-name=leased --addr4 198.19.0.5/24
    out=$(agent_say "")
    agent_end
    echo "    second lease: $out"
    [[ $(json_field "$out" error) == io.github.NmVpnNetns.Agent1.Error.InUse ]] || fail "a second lease was not refused as InUse"
    echo exit >&"$first_in"
    exec {first_in}>&-
    wait "$first_pid"
    rig_wait 10 sh -c "! nsenter -t $RIG_SB_PID -m -- test -e /run/netns/leased" || fail "namespace 'leased' remains"
    pass_note "a second VPN on a leased namespace is refused (InUse)"

    # A user's connection may not touch a namespace the agent did not create.
    rig_sb ip netns add foreign
    agent_client --tun rigtun4 --id mine --uuid "$uuid" --permissions user:alice \
        --settings netns-isolate=yes,netns-name=foreign --addr4 198.19.0.6/24
    out=$(agent_say "")
    agent_end
    echo "    foreign: $out"
    [[ $(json_field "$out" error) == io.github.NmVpnNetns.Agent1.Error.AccessDenied ]] || fail "a user connection got a foreign namespace"
    rig_sb test -e /etc/netns/foreign && fail "files were written for the foreign namespace"
    rig_sb ip netns del foreign
    pass_note "a connection with connection.permissions cannot use a foreign namespace"

    # Only a tun may be moved: a veth is refused before anything happens.
    rig_sb ip link add rigveth0 type veth peer name rigveth1
    agent_client --tun rigveth0 --existing --id veth --uuid "$uuid" --settings netns-isolate=yes,netns-name=veth --addr4 198.19.0.7/24
    out=$(agent_say "")
    agent_end
    echo "    veth: $out"
    [[ -n $(json_field "$out" error) ]] || fail "a veth was isolated"
    rig_sb ip link show rigveth0 >/dev/null || fail "the veth left the root namespace"
    rig_sb ip link del rigveth0
    netns_exists veth && fail "a namespace was left for the refused veth"
    pass_note "a veth is refused and stays where it was"

    # A hostile name never reaches the file system.
    agent_client --tun rigtun5 --id hostile --uuid "$uuid" --settings 'netns-isolate=yes,netns-name=../etc' --addr4 198.19.0.8/24
    out=$(agent_say "")
    agent_end
    echo "    ../etc: $out"
    [[ $(json_field "$out" error) == io.github.NmVpnNetns.Agent1.Error.InvalidArgs ]] || fail "netns-name=../etc was not refused"
    pass_note "netns-name=../etc is refused as InvalidArgs"

    # Only root may call: the bus policy refuses others, and so does the agent itself.
    rig_sb ip tuntap add dev rigtun6 mode tun
    agent_client_as_nobody --tun rigtun6 --existing --id nobody --uuid "$uuid" --addr4 198.19.0.9/24
    out=$(agent_say "")
    agent_end
    echo "    uid 65534, stock policy: $out"
    [[ $(json_field "$out" error) == org.freedesktop.DBus.Error.AccessDenied ]] || fail "the bus let a non-root caller through"
    echo '<busconfig><policy context="default"><allow send_destination="io.github.NmVpnNetns.Agent1"/></policy></busconfig>' |
        rig_sb sh -c 'cat >/etc/dbus-1/system.d/zz-rig-open.conf'
    bus_reload
    agent_client_as_nobody --tun rigtun6 --existing --id nobody --uuid "$uuid" --addr4 198.19.0.9/24
    out=$(agent_say "")
    agent_end
    rig_sb rm /etc/dbus-1/system.d/zz-rig-open.conf
    bus_reload
    echo "    uid 65534, policy opened: $out"
    [[ $(json_field "$out" error) == io.github.NmVpnNetns.Agent1.Error.AccessDenied ]] || fail "the agent let a non-root caller through"
    rig_sb ip link del rigtun6
    pass_note "a non-root caller is refused by the bus policy, and by the agent when the policy is open"

    diff <(echo "$before") <(rig_snapshot) || fail "a refusal left something behind"
    pass_note "nothing left behind"
}

E2E_TESTS=(t_nm_constraints t_stock_vpn_nmcli t_stock_vpn_libnm_keyfile t_broken_ca_fails
    t_agent_isolates_from_nm_context t_agent_releases_when_caller_dies t_agent_refusals)
