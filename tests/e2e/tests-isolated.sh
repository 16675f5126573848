# shellcheck shell=bash
# End-to-end scenarios of the product as a user meets it: `netns-isolate=yes` in a profile, then
# `nmcli connection up` or the GNOME switch, through the installed plugin shim and agent.

# The root-namespace checks of an isolated VPN: no tun, no VPN route or address, no VPN DNS.
assert_root_clean() {
    rig_sb ip -d link show | grep -q ' tun ' && fail "a tun is in the root namespace"
    rig_sb ip route show table all | grep -q '198\.19\.' && fail "a VPN route is in the root namespace"
    rig_sb ip -6 route show table all | grep -q 'fd00:198:19' && fail "a VPN IPv6 route is in the root namespace"
    rig_sb ip addr show | grep -q '198\.19\.\|fd00:198:19' && fail "a VPN address is in the root namespace"
    rig_sb grep -q "$RIG_TUN_SERVER_IP\|$RIG_DNS_DOMAIN" /etc/resolv.conf && fail "the VPN's DNS is in the root resolv.conf"
    return 0
}

# What a user checks once an isolated VPN `name` is up in namespace `ns`.
assert_isolated() {
    local name=$1 ns=$2
    [[ $(rig_state "$name") == activated ]] || fail "NM reports $name as '$(rig_state "$name")'"
    pass_note "NM reports $name activated"
    rig_sb ip netns list | grep -q "^$ns\b" || fail "namespace $ns is not visible in the sandbox's main mount namespace"
    rig_sb ip -n "$ns" -d link show | grep -q ' tun ' || fail "no tun in $ns"
    rig_sb ip -n "$ns" -4 addr show | grep -q 'inet 198\.19\.0\.' || fail "the tun in $ns lacks the pushed address"
    pass_note "/run/netns/$ns is visible; the tun is there with $(rig_sb ip -n "$ns" -4 -o addr show | awk '$2 != "lo" {print $4}')"
    probe_ping_within 10 rig_ns "$ns" || fail "no ping to $RIG_TUN_SERVER_IP from $ns"
    probe_ping rig_sb && fail "$RIG_TUN_SERVER_IP answers from the root namespace"
    pass_note "$RIG_TUN_SERVER_IP answers from $ns and not from the root namespace"
    assert_root_clean
    pass_note "the root namespace has no tun, no VPN route or address, no VPN DNS"
    rig_sb grep -qx "nameserver $RIG_TUN_SERVER_IP" "/etc/netns/$ns/resolv.conf" || fail "resolv.conf of $ns lacks the pushed DNS"
    rig_sb grep -qx "search $RIG_DNS_DOMAIN" "/etc/netns/$ns/resolv.conf" || fail "resolv.conf of $ns lacks the pushed domain"
    rig_sb grep -qx 'hosts: files dns' "/etc/netns/$ns/nsswitch.conf" || fail "nsswitch.conf of $ns does not say hosts: files dns"
    rig_ns "$ns" getent hosts "$RIG_DNS_NAME" | grep -q "^$RIG_TUN_SERVER_IP " || fail "$RIG_DNS_NAME does not resolve in $ns"
    rig_sb getent hosts "$RIG_DNS_NAME" >/dev/null && fail "$RIG_DNS_NAME resolves in the root namespace"
    pass_note "DNS in $ns: pushed server and domain, hosts: files dns; $RIG_DNS_NAME resolves there only"
}

snapshot_is() { [[ $(rig_snapshot) == "$1" ]]; }

# After `down`: no namespace, no DNS files, no process, and the root namespace as before.
assert_gone() {
    local ns=$1 before=$2
    rig_wait_openvpn_gone || fail "openvpn still runs after down"
    rig_wait 10 sh -c "! nsenter -t $RIG_SB_PID -m -- test -e /run/netns/$ns" || fail "namespace $ns remains after down"
    rig_sb test -e "/etc/netns/$ns" && fail "/etc/netns/$ns remains after down"
    rig_wait 10 sh -c "[ \"\$(nsenter -t $RIG_SB_PID -m -n -p -- sh -c 'cat /proc/[0-9]*/comm 2>/dev/null' | grep -c -x -e nm-openvpn-serv -e nm-vpn-netns-se)\" = 0 ]" ||
        fail "a plugin process remains after down"
    diff <(echo "$before") <(rig_snapshot) || fail "the root namespace differs from before activation"
    pass_note "after down: no namespace, no /etc/netns/$ns, no stray process; the root namespace is as before"
}

# Scenarios 1 and 2: isolated by keyfile, then down.
t_isolated_keyfile() {
    local before
    before=$(rig_snapshot)
    rig_profile_keyfile work 1 ca netns-isolate=yes netns-name=work
    probe_ping rig_sb && fail "the tunnel answers before activation (negative control)"
    rig_up_nmcli work >/dev/null || fail "nmcli connection up failed: $(tail -5 "$RIG_W/nm.log")"
    rig_sb pgrep -x nm-vpn-netns-se >/dev/null || fail "the plugin shim is not what NM ran"
    assert_isolated work work
    rig_down_nmcli work >/dev/null || fail "nmcli connection down failed"
    assert_gone work "$before"
    rig_profile_delete work
}

# Scenario 3: the GNOME switch (libnm), on and off.
t_isolated_libnm() {
    local before
    before=$(rig_snapshot)
    rig_profile_keyfile gnome 2 ca netns-isolate=yes netns-name=gnome
    rig_up_libnm gnome 2>&1 | sed 's/^/    /'
    assert_isolated gnome gnome
    rig_down_libnm gnome 2>&1 | sed 's/^/    /'
    assert_gone gnome "$before"
    rig_profile_delete gnome
}

# Scenario 4: a profile without the key goes through the shim exactly as through the stock plugin,
# and a password-authenticated profile with its secret stored connects.
t_passthrough() {
    local before
    before=$(rig_snapshot)
    rig_profile_keyfile plain 3 ca
    stock_vpn_roundtrip plain nmcli
    rig_profile_delete plain
    rig_profile_keyfile password 4 ca connection-type=password-tls "username=$RIG_VPN_USER" password-flags=0 \
        "vpn-secrets.password=$RIG_VPN_PASSWORD"
    rig_up_nmcli password >/dev/null || fail "the password profile did not connect through the shim"
    probe_ping_within 10 rig_sb || fail "no ping through the password-authenticated VPN"
    rig_sb nmcli -g IP4.ADDRESS connection show password | grep -q '^198\.19\.0\.' || fail "no IP4.ADDRESS for the password VPN"
    pass_note "a password-authenticated profile (secret stored) connects through the shim"
    rig_down_nmcli password >/dev/null
    rig_wait_openvpn_gone
    rig_profile_delete password
    diff <(echo "$before") <(rig_snapshot) || fail "something remains"
}

# Scenario 5: netns-name=uuid, netns-name=name with an awkward id, and the default.
t_names() {
    local uuid
    rig_profile_keyfile by-uuid 1 ca netns-isolate=yes netns-name=uuid
    uuid=$(rig_sb nmcli -g connection.uuid connection show by-uuid)
    rig_up_nmcli by-uuid >/dev/null || fail "activation failed"
    rig_sb test -e "/run/netns/$uuid" || fail "netns-name=uuid did not give namespace $uuid"
    pass_note "netns-name=uuid -> $uuid"
    rig_down_nmcli by-uuid >/dev/null
    rig_profile_delete by-uuid

    local id='My Work/VPN (2)' want=My-Work-VPN-2
    rig_profile_keyfile "$id" 2 ca netns-isolate=yes netns-name=name
    rig_up_nmcli "$id" >/dev/null || fail "activation failed"
    rig_sb test -e "/run/netns/$want" || fail "netns-name=name for '$id' did not give $want: $(rig_sb ip netns list)"
    pass_note "netns-name=name for '$id' -> $want"
    rig_down_nmcli "$id" >/dev/null
    rig_profile_delete "$id"

    rig_profile_keyfile 'Default Name' 3 ca netns-isolate=yes
    rig_up_nmcli 'Default Name' >/dev/null || fail "activation failed"
    rig_sb test -e /run/netns/Default-Name || fail "the default did not give Default-Name: $(rig_sb ip netns list)"
    pass_note "no netns-name -> Default-Name"
    rig_down_nmcli 'Default Name' >/dev/null
    rig_profile_delete 'Default Name'
    rig_wait_openvpn_gone
}

# Scenario 6: a persistent namespace outlives `down`, and an app inside rides the reconnect.
t_persistent() {
    local pinger
    rig_profile_keyfile keep 1 ca netns-isolate=yes netns-name=keep netns-persistent=yes
    rig_up_nmcli keep >/dev/null || fail "activation failed"
    # One process, started before down, that keeps pinging through everything (for 2 minutes at
    # most); `ip netns exec` execs it, so the PID the shell wrote is ping's.
    rig_sb sh -c "echo \$\$ >$RIG_IN/keep-ping.pid; exec ip netns exec keep ping -n -i 0.2 -W 1 -w 120 $RIG_TUN_SERVER_IP" \
        >"$RIG_W/keep-ping.out" 2>&1 &
    rig_wait 5 test -s "$RIG_W/keep-ping.pid" || fail "the app did not start"
    pinger=$(cat "$RIG_W/keep-ping.pid")
    rig_wait 10 grep -q 'bytes from' "$RIG_W/keep-ping.out" || fail "the app in keep never reached the server"
    rig_down_nmcli keep >/dev/null
    rig_wait_openvpn_gone
    rig_sb test -e /run/netns/keep || fail "the persistent namespace went away on down"
    rig_sb grep -qx "nameserver $RIG_TUN_SERVER_IP" /etc/netns/keep/resolv.conf || fail "the DNS files went away on down"
    assert_root_clean
    pass_note "after down: namespace keep and its DNS files stay; the app inside still runs"
    local seen
    seen=$(grep -c 'bytes from' "$RIG_W/keep-ping.out")
    rig_up_nmcli keep >/dev/null || fail "the second activation failed"
    rig_wait 10 sh -c "[ \$(grep -c 'bytes from' '$RIG_W/keep-ping.out') -gt $seen ]" ||
        fail "the app started before down did not reach the server after the next up"
    rig_sb kill -0 "$pinger" || fail "the app died"
    pass_note "the same process reaches the server again after the next up, with no restart"
    rig_sb kill "$pinger"
    wait
    rig_down_nmcli keep >/dev/null
    rig_wait_openvpn_gone
    rig_profile_delete keep
    rig_sb ip netns del keep
    rig_sb rm -rf /etc/netns/keep
}

# Scenario 7: each refusal fails activation, says why in NM's log, and leaves nothing behind.
refused() {
    local name=$1 why=$2 before
    shift 2
    before=$(rig_snapshot)
    rig_profile_keyfile "$name" 1 ca "$@" timeout=15
    local lines
    lines=$(wc -l <"$RIG_W/nm.log")
    rig_up_nmcli "$name" >/dev/null 2>&1 && fail "$name activated"
    tail -n +"$lines" "$RIG_W/nm.log" | grep -F -- "$why" | head -2 | sed 's/^/    NM log: /'
    tail -n +"$lines" "$RIG_W/nm.log" | grep -qF -- "$why" || fail "NM's log does not say '$why'"
    rig_profile_delete "$name"
    # openvpn, the stock service and the shim exit within seconds; then all must be as before.
    rig_wait 20 snapshot_is "$before" || true
    diff <(echo "$before") <(rig_snapshot) || fail "$name left something behind"
    pass_note "$name refused ($why); nothing left behind"
}

t_refusals() {
    refused bad-name '../etc' netns-isolate=yes netns-name=../etc
    refused bad-bool 'maybe' netns-isolate=maybe
    refused bad-key 'netns-foo' netns-isolate=yes netns-foo=1
    refused static-dns 'ipv4.dns' netns-isolate=yes ipv4.dns=198.18.0.1
    rig_profile_keyfile first 2 ca netns-isolate=yes netns-name=shared
    rig_up_nmcli first >/dev/null || fail "the first VPN on 'shared' failed"
    refused second 'already' netns-isolate=yes netns-name=shared
    probe_ping_within 10 rig_ns shared || fail "the first VPN broke when the second was refused"
    pass_note "the first VPN on 'shared' still works"
    rig_down_nmcli first >/dev/null
    rig_wait_openvpn_gone
    rig_profile_delete first
}

# Scenario 8: two isolated VPNs at once, in two namespaces.
t_two_at_once() {
    local before
    before=$(rig_snapshot)
    rig_profile_keyfile one 3 ca netns-isolate=yes netns-name=one
    rig_profile_keyfile two 4 ca netns-isolate=yes netns-name=two
    rig_up_nmcli one >/dev/null || fail "one failed"
    rig_up_nmcli two >/dev/null || fail "two failed"
    probe_ping_within 10 rig_ns one || fail "no ping from one"
    probe_ping_within 10 rig_ns two || fail "no ping from two"
    assert_root_clean
    pass_note "two isolated VPNs work at once, in namespaces one and two"
    rig_down_nmcli one >/dev/null
    probe_ping rig_ns two || fail "two broke when one went down"
    rig_down_nmcli two >/dev/null
    assert_gone two "$before"
    rig_profile_delete one
    rig_profile_delete two
}

# The client openvpn of the sandbox (there is one at a time in these scenarios).
openvpn_pid() {
    rig_sb sh -c 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = openvpn ] && echo ${p#/proc/}; done; true' | head -1
}

soft_restart_round() {
    local name=$1 pid
    rig_profile_keyfile "$name" 1 ca netns-isolate=yes "netns-name=$name"
    rig_up_nmcli "$name" >/dev/null || fail "activation failed"
    probe_ping_within 10 rig_ns "$name" || fail "no ping before the restart"
    pid=$(openvpn_pid)
    rig_sb kill -USR1 "$pid"
    rig_wait 10 grep -q "SIGUSR1" "$RIG_W/server.log" || true
    sleep 1
    probe_ping_within 10 rig_ns "$name" || fail "connectivity did not return within 10 s after SIGUSR1"
    assert_root_clean
    pass_note "after SIGUSR1 to openvpn ($1): connectivity in $name returned, the root namespace stayed clean"
    rig_down_nmcli "$name" >/dev/null
    rig_wait_openvpn_gone
    rig_profile_delete "$name"
}

# Scenario 9: openvpn's soft restart, first as Debian runs it (dropped to nm-openvpn), then with
# NM_OPENVPN_USER empty so that it keeps root and re-sends its config.
t_soft_restart() {
    local lines
    soft_restart_round restart-user
    rig_nm_restart NM_OPENVPN_USER=
    lines=$(wc -l <"$RIG_W/sandbox.log")
    soft_restart_round restart-root
    tail -n +"$lines" "$RIG_W/sandbox.log" | grep -q 're-applied' ||
        fail "openvpn kept root, yet the agent never re-applied a config"
    pass_note "with NM_OPENVPN_USER empty, the re-sent config was re-applied inside the namespace"
    rig_nm_restart
}

E2E_TESTS+=(t_isolated_keyfile t_isolated_libnm t_passthrough t_names t_persistent t_refusals
    t_two_at_once t_soft_restart)

# `make uninstall` restores the stock registration exactly, and `make install` takes it over again.
t_install_uninstall() {
    local stock=/usr/lib/NetworkManager/VPN/nm-openvpn-service.name diverted
    diverted=$stock.distrib
    rig_sb grep -qx 'program=/usr/lib/NetworkManager/nm-vpn-netns-service' "$stock" ||
        fail "the installed .name does not point at the shim"
    diff <(rig_sb sed '/^program=/d' "$stock") <(rig_sb sed '/^program=/d' "$diverted") ||
        fail "our .name differs from the stock one in more than program="
    rig_sb dpkg-divert --list "$stock" | grep -q "$diverted" || fail "the stock .name is not diverted"
    pass_note "installed: our .name is the stock one but for program=, and the stock one is diverted"

    rig_sb make -s -C "$RIG_SRC_IN" uninstall >/dev/null || fail "make uninstall failed"
    rig_sb cmp "$stock" "$RIG_IN/stock.name" || fail "uninstall did not restore the stock .name byte for byte"
    rig_sb test -e "$diverted" && fail "uninstall left $diverted"
    [[ -z $(rig_sb dpkg-divert --list "$stock") ]] || fail "uninstall left the diversion"
    local f
    for f in /usr/lib/NetworkManager/nm-vpn-netns-service /usr/libexec/nm-vpn-netns-agent /usr/bin/nm-vpn-netns \
        /usr/share/dbus-1/system.d/io.github.NmVpnNetns.Agent1.conf \
        /usr/share/dbus-1/system-services/io.github.NmVpnNetns.Agent1.service \
        /usr/lib/systemd/system/nm-vpn-netns-agent.service; do
        rig_sb test -e "$f" && fail "uninstall left $f"
    done
    pass_note "uninstalled: the stock .name is back byte for byte, no diversion, none of our files"

    rig_install
    rig_sb grep -qx 'program=/usr/lib/NetworkManager/nm-vpn-netns-service' "$stock" || fail "reinstall failed"
    pass_note "reinstalled"
}
E2E_TESTS+=(t_install_uninstall)
