# shellcheck shell=bash
# End-to-end scenarios of the product as a user meets it: `netns-isolate=yes` in a profile, then
# `nmcli connection up` or the GNOME switch, through the installed plugin shim and agent.

# The root-namespace checks of an isolated VPN: no tun, no VPN route or address, no VPN DNS.
assert_root_clean() {
    expect_no_match "a tun is in the root namespace" ' tun ' "$(rig_sb ip -d link show)"
    assert_root_unconfigured
}

# No route, address or DNS of the VPN in the root namespace.
assert_root_unconfigured() {
    expect_no_match "a VPN route is in the root namespace" '198\.19\.' "$(rig_sb ip route show table all)"
    expect_no_match "a VPN IPv6 route is in the root namespace" 'fd00:198:19' "$(rig_sb ip -6 route show table all)"
    expect_no_match "a VPN address is in the root namespace" '198\.19\.|fd00:198:19' "$(rig_sb ip addr show)"
    expect_no_match "the VPN's DNS is in the root resolv.conf" "$RIG_TUN_SERVER_IP|$RIG_DNS_DOMAIN" \
        "$(rig_sb cat /etc/resolv.conf)"
}

# What a user checks once an isolated VPN `name` is up in namespace `ns`.
assert_isolated() {
    local name=$1 ns=$2
    expect_activated "NM does not report $name activated" "$name"
    pass_note "NM reports $name activated"
    expect_netns "namespace $ns is not visible in the sandbox's main mount namespace" "$ns"
    expect_contains "no tun in $ns" ' tun ' "$(rig_sb ip -n "$ns" -d link show 2>&1)"
    expect_match "the tun in $ns lacks the pushed address" 'inet 198\.19\.0\.' "$(rig_sb ip -n "$ns" -4 addr show 2>&1)"
    pass_note "/run/netns/$ns is visible; the tun is there with $(rig_sb ip -n "$ns" -4 -o addr show | awk '$2 != "lo" {print $4}')"
    expect_ping "no ping to $RIG_TUN_SERVER_IP from $ns" 10 rig_ns "$ns"
    expect_no_ping "$RIG_TUN_SERVER_IP answers from the root namespace" rig_sb
    pass_note "$RIG_TUN_SERVER_IP answers from $ns and not from the root namespace"
    assert_root_clean
    pass_note "the root namespace has no tun, no VPN route or address, no VPN DNS"
    expect_sb_file_line "resolv.conf of $ns lacks the pushed DNS" "nameserver $RIG_TUN_SERVER_IP" "/etc/netns/$ns/resolv.conf"
    expect_sb_file_line "resolv.conf of $ns lacks the pushed domain" "search $RIG_DNS_DOMAIN" "/etc/netns/$ns/resolv.conf"
    expect_sb_file_line "nsswitch.conf of $ns does not say hosts: files dns" 'hosts: files dns' "/etc/netns/$ns/nsswitch.conf"
    expect_match "$RIG_DNS_NAME does not resolve in $ns" "^$RIG_TUN_SERVER_IP " "$(rig_ns "$ns" getent hosts "$RIG_DNS_NAME" 2>&1)"
    expect_cmd_fails "$RIG_DNS_NAME resolves in the root namespace" rig_sb getent hosts "$RIG_DNS_NAME"
    pass_note "DNS in $ns: pushed server and domain, hosts: files dns; $RIG_DNS_NAME resolves there only"
}

# After `down`: no namespace, no DNS files, no process, and the root namespace as before.
assert_gone() {
    local ns=$1 before=$2
    expect_vpn_gone
    expect_netns_gone "namespace $ns remains after down" "$ns" 10
    # The release deletes the namespace first, then the DNS files: this may still be under way.
    expect_sb_absent "/etc/netns/$ns remains after down" "/etc/netns/$ns" 10
    expect_procs_gone "a plugin process remains after down" 10 nm-openvpn-serv nm-vpn-netns-se
    expect_snapshot "the root namespace differs from before activation" "$before"
    pass_note "after down: no namespace, no /etc/netns/$ns, no stray process; the root namespace is as before"
}

# Scenarios 1 and 2: isolated by keyfile, then down.
t_isolated_keyfile() {
    local before
    before=$(rig_snapshot)
    rig_profile_keyfile work 1 ca netns-isolate=yes netns-name=work
    expect_no_ping "the tunnel answers before activation (negative control)" rig_sb
    expect_cmd_ok "nmcli connection up failed" rig_up_nmcli work
    expect_proc_running "the plugin shim is not what NM ran" nm-vpn-netns-se
    assert_isolated work work
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli work
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
    expect_cmd_ok "the password profile did not connect through the shim" rig_up_nmcli password
    expect_ping "no ping through the password-authenticated VPN" 10 rig_sb
    expect_match "no IP4.ADDRESS for the password VPN" '^198\.19\.0\.' "$(rig_sb nmcli -g IP4.ADDRESS connection show password)"
    pass_note "a password-authenticated profile (secret stored) connects through the shim"
    rig_down_nmcli password >/dev/null
    expect_vpn_gone
    rig_profile_delete password
    expect_snapshot "something remains" "$before"
}

# Scenario 5: netns-name=uuid, netns-name=name with an awkward id, and the default.
t_names() {
    local uuid
    rig_profile_keyfile by-uuid 1 ca netns-isolate=yes netns-name=uuid
    uuid=$(rig_sb nmcli -g connection.uuid connection show by-uuid)
    expect_cmd_ok "activation failed" rig_up_nmcli by-uuid
    expect_netns "netns-name=uuid did not give namespace $uuid" "$uuid"
    pass_note "netns-name=uuid -> $uuid"
    rig_down_nmcli by-uuid >/dev/null
    rig_profile_delete by-uuid

    local id='My Work/VPN (2)' want=My-Work-VPN-2
    rig_profile_keyfile "$id" 2 ca netns-isolate=yes netns-name=name
    expect_cmd_ok "activation failed" rig_up_nmcli "$id"
    expect_netns "netns-name=name for '$id' did not give $want" "$want"
    pass_note "netns-name=name for '$id' -> $want"
    rig_down_nmcli "$id" >/dev/null
    rig_profile_delete "$id"

    rig_profile_keyfile 'Default Name' 3 ca netns-isolate=yes
    expect_cmd_ok "activation failed" rig_up_nmcli 'Default Name'
    expect_netns "the default did not give Default-Name" Default-Name
    pass_note "no netns-name -> Default-Name"
    rig_down_nmcli 'Default Name' >/dev/null
    rig_profile_delete 'Default Name'
    expect_vpn_gone
}

# Scenario 6: a persistent namespace outlives `down`, and an app inside rides the reconnect.
replies() { grep -c 'bytes from' "$RIG_W/keep-ping.out" || true; }
more_replies_than() { (($(replies) > $1)); }
t_persistent() {
    local pinger
    rig_profile_keyfile keep 1 ca netns-isolate=yes netns-name=keep netns-persistent=yes
    expect_cmd_ok "activation failed" rig_up_nmcli keep
    # One process, started before down, that keeps pinging through everything (for 2 minutes at
    # most); `ip netns exec` execs it, so the PID the shell wrote is ping's.
    rig_sb sh -c "echo \$\$ >$RIG_IN/keep-ping.pid; exec ip netns exec keep ping -n -i 0.2 -W 1 -w 120 $RIG_TUN_SERVER_IP" \
        >"$RIG_W/keep-ping.out" 2>&1 &
    expect_within "the app did not start" 5 test -s "$RIG_W/keep-ping.pid"
    pinger=$(cat "$RIG_W/keep-ping.pid")
    expect_match_within "the app in keep never reached the server" 10 'bytes from' cat "$RIG_W/keep-ping.out"
    rig_down_nmcli keep >/dev/null
    expect_vpn_gone
    expect_netns "the persistent namespace went away on down" keep
    expect_sb_file_line "the DNS files went away on down" "nameserver $RIG_TUN_SERVER_IP" /etc/netns/keep/resolv.conf
    assert_root_clean
    pass_note "after down: namespace keep and its DNS files stay; the app inside still runs"
    local seen
    seen=$(replies)
    expect_cmd_ok "the second activation failed" rig_up_nmcli keep
    rig_wait 10 more_replies_than "$seen" ||
        expect_failed "the app started before down did not reach the server after the next up" \
            "more than $seen replies in keep-ping.out" "$(tail -5 "$RIG_W/keep-ping.out")"
    expect_cmd_ok "the app died" rig_sb kill -0 "$pinger"
    pass_note "the same process reaches the server again after the next up, with no restart"
    rig_sb kill "$pinger"
    wait
    rig_down_nmcli keep >/dev/null
    expect_vpn_gone
    rig_profile_delete keep
    rig_sb ip netns del keep
    rig_sb rm -rf /etc/netns/keep
}

# Scenario 7: each refusal fails activation, says why in NM's log, and leaves nothing behind.
refused() {
    local name=$1 why=$2 before
    shift 2
    # A snapshot must not catch the plugins of the previous refusal on their way out.
    rig_wait 20 vpn_procs_settled || true
    before=$(rig_snapshot)
    rig_profile_keyfile "$name" 1 ca "$@" timeout=15
    local lines log said
    lines=$(wc -l <"$RIG_W/nm.log")
    expect_cmd_fails "$name activated" rig_up_nmcli "$name"
    log=$(tail -n +"$lines" "$RIG_W/nm.log")
    said=$(grep -F -- "$why" <<<"$log") ||
        expect_failed "NM's log does not say '$why'" "a line containing '$why'" "$(tail -20 <<<"$log")"
    head -2 <<<"$said" | sed 's/^/    NM log: /'
    rig_profile_delete "$name"
    # openvpn, the stock service and the shim exit within seconds; then all must be as before.
    expect_snapshot "$name left something behind" "$before" 20
    pass_note "$name refused ($why); nothing left behind"
}

t_refusals() {
    refused bad-name '../etc' netns-isolate=yes netns-name=../etc
    refused bad-bool 'maybe' netns-isolate=maybe
    refused bad-key 'netns-foo' netns-isolate=yes netns-foo=1
    refused static-dns 'ipv4.dns' netns-isolate=yes ipv4.dns=198.18.0.1
    rig_profile_keyfile first 2 ca netns-isolate=yes netns-name=shared
    expect_cmd_ok "the first VPN on 'shared' failed" rig_up_nmcli first
    refused second 'already' netns-isolate=yes netns-name=shared
    expect_ping "the first VPN broke when the second was refused" 10 rig_ns shared
    pass_note "the first VPN on 'shared' still works"
    rig_down_nmcli first >/dev/null
    expect_vpn_gone
    rig_profile_delete first
}

# Scenario 8: two isolated VPNs at once, in two namespaces.
t_two_at_once() {
    local before
    before=$(rig_snapshot)
    rig_profile_keyfile one 3 ca netns-isolate=yes netns-name=one
    rig_profile_keyfile two 4 ca netns-isolate=yes netns-name=two
    expect_cmd_ok "one failed" rig_up_nmcli one
    expect_cmd_ok "two failed" rig_up_nmcli two
    expect_ping "no ping from one" 10 rig_ns one
    expect_ping "no ping from two" 10 rig_ns two
    assert_root_clean
    pass_note "two isolated VPNs work at once, in namespaces one and two"
    rig_down_nmcli one >/dev/null
    expect_ping "two broke when one went down" 0 rig_ns two
    rig_down_nmcli two >/dev/null
    assert_gone two "$before"
    rig_profile_delete one
    rig_profile_delete two
}

soft_restart_round() {
    local name=$1 pid
    rig_profile_keyfile "$name" 1 ca netns-isolate=yes "netns-name=$name"
    expect_cmd_ok "activation failed" rig_up_nmcli "$name"
    expect_ping "no ping before the restart" 10 rig_ns "$name"
    # The client openvpn of the sandbox (there is one at a time in these scenarios).
    pid=$(sb_pid openvpn)
    rig_sb kill -USR1 "$pid"
    rig_wait 10 grep -q "SIGUSR1" "$RIG_W/server.log" || true
    sleep 1
    expect_ping "connectivity did not return within 10 s after SIGUSR1" 10 rig_ns "$name"
    assert_root_clean
    pass_note "after SIGUSR1 to openvpn ($1): connectivity in $name returned, the root namespace stayed clean"
    rig_down_nmcli "$name" >/dev/null
    expect_vpn_gone
    rig_profile_delete "$name"
}

# Scenario 9: openvpn's soft restart, first as Debian runs it (dropped to nm-openvpn), then with
# NM_OPENVPN_USER empty so that it keeps root and re-sends its config.
t_soft_restart() {
    local lines log
    soft_restart_round restart-user
    rig_nm_restart NM_OPENVPN_USER=
    lines=$(wc -l <"$RIG_W/sandbox.log")
    soft_restart_round restart-root
    log=$(tail -n +"$lines" "$RIG_W/sandbox.log")
    expect_contains "openvpn kept root, yet the agent never re-applied a config" 're-applied' "$log"
    pass_note "with NM_OPENVPN_USER empty, the re-sent config was re-applied inside the namespace"
    rig_nm_restart
}

# The part of the sandbox's log written since line $1 (a count from `wc -l`).
sandbox_log_since() { tail -n +"$1" "$RIG_W/sandbox.log"; }

# Scenario 10: the agent killed with a VPN up, as a crash or the OOM killer would: the VPN lives on,
# the agent that the next call starts takes the lease back from its record, so `down` still
# releases everything, and the name is free for the next `up`.
t_agent_killed() {
    local before lines log
    before=$(rig_snapshot)
    rig_profile_keyfile survivor 1 ca netns-isolate=yes netns-name=survivor
    expect_no_ping "the tunnel answers before activation (negative control)" rig_sb
    expect_cmd_ok "nmcli connection up failed" rig_up_nmcli survivor
    expect_agent_running "no agent on the bus after up"
    lines=$(wc -l <"$RIG_W/sandbox.log")
    rig_sb kill -9 "$AGENT_PID"
    expect_within "the agent (pid $AGENT_PID) survived kill -9" 5 sb_pid_gone "$AGENT_PID"
    expect_within "an agent is still on the bus after kill -9" 5 no_agent_on_bus
    pass_note "killed the agent (pid $AGENT_PID) with the VPN up"
    assert_isolated survivor survivor
    expect_cmd_ok "the record of survivor is gone" rig_sb test -s /run/nm-vpn-netns/survivor
    pass_note "with no agent running, the namespace, its traffic and DNS, and the record live on"

    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli survivor
    assert_gone survivor "$before"
    expect_sb_absent "the record of survivor remains after down" /run/nm-vpn-netns/survivor
    log=$(sandbox_log_since "$lines")
    expect_contains "the new agent did not take the lease back" "took back the lease on namespace survivor" "$log"
    expect_contains "the new agent did not release survivor on down" "released namespace survivor" "$log"
    pass_note "down started a new agent, which took the lease back and released everything: no record left"

    expect_cmd_ok "up after the restart failed (the name still in use?)" rig_up_nmcli survivor
    expect_ping "no ping from survivor after up again" 10 rig_ns survivor
    rig_down_nmcli survivor >/dev/null
    # tests-faults.sh: NM has it down; no record or mount either.
    assert_fault_clean survivor survivor "$before"
    pass_note "survivor comes up again and goes down clean"
    rig_profile_delete survivor
}

# Scenario 11: an upgrade with a VPN up replaces the agent's binary but does not restart the agent;
# the old agent exits after its last release, and the bus starts the new binary on the next call.
t_agent_replaced() {
    local before lines old agent=/usr/libexec/nm-vpn-netns-agent
    before=$(rig_snapshot)
    rig_profile_keyfile upgrade 2 ca netns-isolate=yes netns-name=upgrade
    expect_cmd_ok "nmcli connection up failed" rig_up_nmcli upgrade
    expect_agent_running "no agent on the bus after up"
    old=$AGENT_PID
    # As dpkg installs a file: a new one, renamed over the old.
    rig_sb sh -c "cp -p $agent $agent.dpkg-new && mv $agent.dpkg-new $agent"
    lines=$(wc -l <"$RIG_W/sandbox.log")
    expect_ping "the VPN broke when the binary was replaced" 5 rig_ns upgrade
    expect_agent_running "the agent exited when its binary was replaced, with a lease held"
    expect_eq "another agent runs after the binary was replaced" "$old" "$AGENT_PID"
    pass_note "binary replaced: the agent (pid $old) runs on while it holds a lease"

    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli upgrade
    assert_gone upgrade "$before"
    expect_within "the agent (pid $old) still runs after its last release" 10 sb_pid_gone "$old"
    expect_contains "the agent did not say why it exited" "was replaced on disk; exiting" "$(sandbox_log_since "$lines")"
    pass_note "down released everything, then the old agent exited"

    expect_cmd_ok "up with the new binary failed" rig_up_nmcli upgrade
    expect_agent_running "no agent on the bus after up"
    expect_ne "the old agent answered" "$old" "$AGENT_PID"
    expect_ping "no ping from upgrade with the new agent" 10 rig_ns upgrade
    rig_down_nmcli upgrade >/dev/null
    assert_gone upgrade "$before"
    pass_note "the bus started the new binary (pid $AGENT_PID) for the next up"
    rig_profile_delete upgrade
}

# NAME N: N cycles of `down` then at once `up` of NAME; each `up` must come up.
quick_cycles() {
    local name=$1 n=$2 i ups=0
    for ((i = 1; i <= n; i++)); do
        rig_sb nmcli connection down "$name" >/dev/null 2>&1
        if rig_up_nmcli "$name" >"$RIG_W/quick-up.$i" 2>&1; then
            ups=$((ups + 1))
        else
            sed "s/^/    up $i: /" "$RIG_W/quick-up.$i"
        fi
    done
    expect_eq "not every immediate down/up came up" "$n" "$ups"
}

# Scenario 12: `down` then `up` with no pause, as a user flicking the GNOME switch does. NM does
# not wait for a plugin to stop, so the new plugin's Isolate can meet the old plugin's lease; the
# agent waits for it (within netns-timeout) instead of refusing the connection.
quick_records() { rig_sb sh -c 'cd /run/nm-vpn-netns && for f in *; do [ -e "$f" ] && echo "$f"; done; true'; }
t_quick_reconnect() {
    local before records lines waited
    before=$(rig_snapshot)
    # Earlier scenarios may leave the record of a namespace they kept (netns-persistent).
    records=$(quick_records)
    rig_profile_keyfile quick 1 ca netns-isolate=yes netns-name=quick
    expect_cmd_ok "the first up failed" rig_up_nmcli quick
    lines=$(wc -l <"$RIG_W/sandbox.log")
    quick_cycles quick 5
    waited=$(sandbox_log_since "$lines" | grep -c 'namespace quick is free after') || true
    pass_note "5 immediate down/up cycles all came up; $waited of them waited for the previous lease"
    assert_isolated quick quick
    expect_within "more VPN processes than one VPN needs" 20 vpn_procs_settled
    expect_eq "not exactly one namespace" quick "$(rig_sb ip netns list | awk '{print $1}')"
    expect_eq "not exactly one record besides those of earlier scenarios" quick \
        "$(comm -13 <(echo "$records") <(quick_records))"
    expect_match "the record of quick is not leased" '"leased": true' "$(rig_sb cat /run/nm-vpn-netns/quick)"
    pass_note "one namespace, one leased record, one openvpn, one plugin"
    expect_cmd_ok "the last down failed" rig_down_nmcli quick
    assert_gone quick "$before"
    expect_eq "a record is left after down" "$records" "$(quick_records)"
    rig_profile_delete quick
}

# Scenario 13: tunnel-mtu reaches the tun in the namespace; without it the tun keeps 1500.
# openvpn runs with --tun-mtu 1400 but --ifconfig-noexec, and nm-openvpn's helper says mtu 1500 in
# Config: the agent sets the profile's tunnel-mtu on the tun.
tun_mtu() { rig_sb ip -n mtu -o link show | grep -v ' lo:' | grep -o 'mtu [0-9]*'; }
t_tunnel_mtu() {
    local before
    before=$(rig_snapshot)
    rig_profile_keyfile mtu 1 ca netns-isolate=yes netns-name=mtu tunnel-mtu=1400
    expect_cmd_ok "up with tunnel-mtu=1400 failed" rig_up_nmcli mtu
    expect_eq "the tun in mtu does not have MTU 1400" "mtu 1400" "$(tun_mtu)"
    expect_within "no 1400-byte ping through the tunnel" 10 rig_ns mtu ping -M do -s 1372 -c1 -W1 -q "$RIG_TUN_SERVER_IP"
    pass_note "tunnel-mtu=1400: $(tun_mtu) inside namespace mtu"
    rig_down_nmcli mtu >/dev/null
    assert_gone mtu "$before"
    rig_profile_delete mtu
    rig_profile_keyfile mtu 1 ca netns-isolate=yes netns-name=mtu
    expect_cmd_ok "up without tunnel-mtu failed" rig_up_nmcli mtu
    expect_eq "without tunnel-mtu the tun does not have MTU 1500 (negative control)" "mtu 1500" "$(tun_mtu)"
    pass_note "negative control: without the key, $(tun_mtu)"
    rig_down_nmcli mtu >/dev/null
    assert_gone mtu "$before"
    rig_profile_delete mtu
}

# Scenario 14: an app still running in a namespace that `down` deletes is stranded there; NM's log
# names it (through the plugin) and suggests netns-persistent=yes.
t_apps_left_behind() {
    local before lines pid
    before=$(rig_snapshot)
    rig_profile_keyfile left 1 ca netns-isolate=yes netns-name=left
    expect_cmd_ok "activation failed" rig_up_nmcli left
    lines=$(wc -l <"$RIG_W/nm.log")
    # `ip netns exec` execs setpriv, which execs sleep, so the PID the shell wrote is sleep's. It
    # runs as nobody, as a user's app does: the agent needs more than root's uid to see into the
    # process of another user (CAP_SYS_PTRACE, for /proc/PID/ns/net).
    rig_sb sh -c "echo \$\$ >$RIG_IN/left-sleep.pid; exec ip netns exec left \
        setpriv --reuid=65534 --regid=65534 --clear-groups sleep 120" >/dev/null 2>&1 &
    expect_within "the app did not start" 5 test -s "$RIG_W/left-sleep.pid"
    pid=$(cat "$RIG_W/left-sleep.pid")
    expect_cmd_ok "down failed" rig_down_nmcli left
    expect_match_within "NM's log does not name the stranded app" 15 \
        "namespace left was deleted at down while processes still ran in it: $pid \(sleep\)" \
        tail -n +"$lines" "$RIG_W/nm.log"
    expect_match_within "NM's log does not suggest netns-persistent" 1 'set netns-persistent=yes' \
        tail -n +"$lines" "$RIG_W/nm.log"
    expect_contains "the agent's log does not name the stranded app" "$pid (sleep)" "$(cat "$RIG_W/sandbox.log")"
    pass_note "NM's log: $(tail -n +"$lines" "$RIG_W/nm.log" | grep -o "namespace left was deleted.*$pid (sleep)" | head -1)"
    rig_sb kill "$pid"
    wait
    assert_gone left "$before"
    rig_profile_delete left
}

E2E_TESTS+=(t_isolated_keyfile t_isolated_libnm t_passthrough t_names t_persistent t_refusals
    t_two_at_once t_soft_restart t_agent_killed t_agent_replaced t_quick_reconnect
    t_apps_left_behind t_tunnel_mtu)
# Its password-authenticated profile is not isolated.
E2E_UNISOLATED+=(t_passthrough)

# `make uninstall` restores the stock registrations exactly, and `make install` takes them over again.
t_install_uninstall() {
    local plugin stock f
    for plugin in "${RIG_PLUGINS[@]}"; do
        stock=$(rig_stock_name "$plugin")
        expect_taken_over "installed" "$plugin"
        expect_contains "the stock $stock is not diverted" "$stock.distrib" "$(rig_sb dpkg-divert --list "$stock")"
    done
    pass_note "installed: ours for ${RIG_PLUGINS[*]} is the stock .name but for program=, as NetworkManager reads it, and the stock one is diverted"

    expect_sb_file_line "the polkit action of exec does not name the installed program" \
        '    <annotate key="org.freedesktop.policykit.exec.path">/usr/bin/nm-vpn-netns</annotate>' \
        /usr/share/polkit-1/actions/io.github.NmVpnNetns.exec.policy
    expect_cmd_ok "make uninstall failed" rig_sb make -s -C "$RIG_SRC_IN" uninstall
    for plugin in "${RIG_PLUGINS[@]}"; do
        expect_stock_registration "make uninstall" "$plugin"
    done
    for f in /usr/lib/NetworkManager/nm-vpn-netns-service /usr/libexec/nm-vpn-netns-agent /usr/bin/nm-vpn-netns \
        /usr/share/dbus-1/system.d/io.github.NmVpnNetns.Agent1.conf \
        /usr/share/dbus-1/system-services/io.github.NmVpnNetns.Agent1.service \
        /usr/lib/systemd/system/nm-vpn-netns-agent.service /usr/share/man/man8/nm-vpn-netns-agent.8.gz \
        /usr/share/man/man5/nm-vpn-netns.5.gz /usr/share/bash-completion/completions/nm-vpn-netns \
        /usr/share/polkit-1/actions/io.github.NmVpnNetns.exec.policy; do
        expect_sb_absent "uninstall left $f" "$f"
    done
    pass_note "uninstalled: the stock .name files are back byte for byte, no diversion, none of our files"

    rig_install
    for plugin in "${RIG_PLUGINS[@]}"; do
        expect_taken_over "reinstalled" "$plugin"
    done
    pass_note "reinstalled"
}
E2E_TESTS+=(t_install_uninstall)
