# shellcheck shell=bash
# End-to-end scenarios of NetworkManager-openconnect against the rig's ocserv (lib/openconnect.sh).
# A profile without netns-isolate runs through our shim exactly as through the stock
# nm-openconnect-service; one with it is isolated, as an OpenVPN profile is (tests-isolated.sh).

# The tuns of openconnect VPNs in the sandbox's root namespace (NM-openconnect names them vpnN), and
# the routes to the pool and the split network.
# With a namespace $1, the tuns in that namespace.
oc_links() { rig_sb ip ${1:+-n "$1"} -o link show | awk -F': ' '$2 ~ /^vpn[0-9]+$/ {print $2}'; }
oc_routes() { rig_sb ip route show table all | grep -E '198\.19\.1[67]\.' || true; }

# WHAT TUN: after down, the tun TUN is gone, or it is what the stock NM-openconnect 1.2.8 leaves:
# persistent, its openconnect gone (no carrier), no IPv4 address. The service unpersists the tun only
# in its child watch, after openconnect exits (nm-openconnect-service.c:openconnect_watch_cb); but at
# down libnm's plugin emits "quit" as soon as the state is STOPPED (NM
# src/libnm-client-impl/nm-vpn-service-plugin.c:state_changed), main() leaves its loop, and the
# child watch never runs. The next activation takes the same name again (create_persistent_tundev
# tries vpn0 first, and root may attach to a tun of another owner).
expect_tun_left() {
    local what=$1 tun=$2 link
    link=$(rig_sb ip -d addr show dev "$tun" 2>/dev/null) || return 0
    expect_match "$what" "persist on user nm-openconnect" "$link"
    expect_contains "$what" NO-CARRIER "$link"
    expect_no_match "$what" '^ *inet ' "$link"
}

# One activation of the stock profile NAME with a fresh cookie, up to down, ROUND ($2) of them, VIA
# ($3) our shim (the registration taken over) or the stock plugin alone (the stock registration). The
# tun's name goes to OC_TUN; the first round also prints what NM and the kernel show of the VPN.
oc_stock_round() {
    local name=$1 round=$2 via=$3 dns
    rig_oc_profile "$name"
    expect_eq "openconnect saw another server certificate" "$(rig_oc_pin)" "$OC_FINGERPRINT"
    expect_cmd_ok "nmcli connection up failed (round $round)" rig_up_nmcli "$name"
    expect_activated "NM does not report $name activated (round $round)" "$name"
    expect_proc_running "the stock openconnect plugin does not run" nm-openconnect-
    if [[ $via == shim ]]; then
        expect_proc_running "NM did not run our shim" nm-vpn-netns-se
    else
        expect_eq "our shim runs with the stock registration" "" "$(sb_ps nm-vpn-netns-se)"
    fi
    OC_TUN=$(oc_links)
    expect_match "no single vpnN tun in the root namespace" '^vpn[0-9]+$' "$OC_TUN"
    if ((round == 1)); then
        pass_note "a cookie from openconnect --authenticate for $OC_CONNECT_URL; NM reports $name activated (via: $via)"
        rig_sb ip -d link show "$OC_TUN" | sed 's/^/    ip -d link: /'
        rig_sb nmcli -g IP4.ADDRESS,IP4.ROUTE,IP4.DNS,IP4.DOMAIN connection show "$name" | sed 's/^/    nmcli: /'
    fi
    expect_match "the tun is not a persistent tun of user nm-openconnect" \
        "persist on user nm-openconnect" "$(rig_sb ip -d link show "$OC_TUN")"
    dns=$(rig_sb nmcli -g IP4.DNS connection show "$name")
    expect_line "NM did not take the VPN's DNS" "$RIG_OC_DNS_IP" "$dns"
    expect_ping "no ping to $RIG_OC_DNS_IP through the VPN (round $round)" 10 rig_sb
    expect_match "$RIG_OC_DNS_NAME does not resolve through the VPN's DNS (round $round)" "^$RIG_OC_DNS_IP " \
        "$(rig_sb getent hosts "$RIG_OC_DNS_NAME" 2>&1)"
    pass_note "round $round ($via): $OC_TUN is up; $RIG_OC_DNS_IP answers and $RIG_OC_DNS_NAME resolves through the tunnel"

    expect_cmd_ok "nmcli connection down failed (round $round)" rig_down_nmcli "$name"
    expect_procs_gone "a process of the openconnect VPN remains after down" 15 "${OC_PROCS[@]}" nm-vpn-netns-se
    expect_eq "a route of the VPN remains after down" "" "$(oc_routes)"
    expect_no_ping "$RIG_OC_DNS_IP still answers after down" rig_sb
    expect_cmd_fails "$RIG_OC_DNS_NAME still resolves after down" rig_sb getent hosts "$RIG_OC_DNS_NAME"
    expect_no_match "the VPN's DNS is in resolv.conf after down" "$RIG_OC_DNS_IP" "$(rig_sb cat /etc/resolv.conf)"
    expect_tun_left "after down, $OC_TUN is neither gone nor the stock's idle persistent tun" "$OC_TUN"
    pass_note "round $round ($via): after down no process, route, address or DNS of the VPN remains"
}

# FUNCTION: runs FUNCTION of packaging/takeover.sh for openconnect in the sandbox, with make
# install's local diversion. What it did is checked afterwards; what went wrong goes to stderr.
oc_takeover() {
    # shellcheck disable=SC2016 # expanded by the sandbox's shell
    rig_sb env NM_VPN_NETNS_DIVERT_OWNER=--local sh -ec '. "$0/packaging/takeover.sh"; "$@"' \
        "$RIG_SRC_IN" "$1" openconnect >/dev/null
}

# The reference for "as stock": the registration handed back to the stock file, as make uninstall
# does, and taken over again when the scenario ends, however it ends (an EXIT trap of its
# subshell), so that the scenarios after it find the installation as make install left it.
oc_stock_registration() {
    rig_nm_reregister "$(rig_stock_name openconnect)" oc_takeover nm_vpn_netns_undivert
    trap oc_stock_registration_end EXIT
    expect_cmd_ok "NetworkManager's view of openconnect is not the stock registration" rig_sb /usr/bin/python3 \
        "$RIG_SRC_IN/tests/e2e/vpn-registration.py" org.freedesktop.NetworkManager.openconnect \
        /usr/lib/NetworkManager/nm-openconnect-service "$RIG_IN/stock-openconnect.name"
    pass_note "for this scenario, the stock registration of openconnect: $EXPECT_OUT"
}
oc_stock_registration_end() {
    trap - EXIT
    rig_nm_reregister "$(rig_stock_name openconnect)" oc_takeover nm_vpn_netns_take_over
    expect_taken_over "openconnect taken over again" openconnect
}

# The stock VPN's idle tun, if stock NM-openconnect left one (expect_tun_left), deleted by the rig.
oc_stock_tun_del() {
    [[ -n $(oc_links) ]] || return 0
    pass_note "stock NM-openconnect left $OC_TUN behind, idle and persistent; the rig deletes it"
    rig_sb ip link del "$OC_TUN"
}

# A profile without netns-isolate through the real NetworkManager, each time with a fresh cookie as
# the auth dialog gets one: up, traffic and the VPN-only name through the tunnel, down, and nothing
# of it left but the stock's idle tun; the same probes fail before up and after down. Twice through
# our shim, as make install left the registration, then once with the stock registration: the same
# checks hold both ways.
t_openconnect_stock() {
    # shellcheck disable=SC2034 # the probe's target for this scenario (lib/sandbox.sh: probe_ping)
    local RIG_PROBE_IP=$RIG_OC_DNS_IP before rc hits
    expect_taken_over "make install did not take over openconnect" openconnect
    before=$(rig_snapshot)
    expect_no_ping "$RIG_OC_DNS_IP answers before the VPN is up (negative control)" rig_sb
    expect_cmd_fails "$RIG_OC_DNS_NAME resolves before the VPN is up (negative control)" \
        rig_sb getent hosts "$RIG_OC_DNS_NAME"
    pass_note "before up: $RIG_OC_DNS_IP is unreachable and $RIG_OC_DNS_NAME does not resolve"

    oc_stock_round oc-stock 1 shim
    # A cookie serves one session: openconnect logged out at down, so this round needs a new one.
    oc_stock_round oc-stock 2 shim
    oc_stock_tun_del
    expect_snapshot "the sandbox's root namespace differs from before activation" "$before" 10
    pass_note "after down: the sandbox's root namespace is as before"

    oc_stock_registration
    oc_stock_round oc-stock 3 stock
    oc_stock_tun_del
    expect_snapshot "the sandbox's root namespace differs from before activation (stock)" "$before" 10
    pass_note "with the stock registration too: the same checks hold, and the root namespace is as before"

    # The cookie is a credential: no log or output of the rig may hold it. The pattern goes through
    # a file, so that it is on no command line either; grep's exit 1 alone means it read every file
    # and found none (sockets are skipped, not errors).
    rc=0
    hits=$(grep -rlF -D skip -f <(printf '%s\n' "$OC_COOKIE") "$RIG_W" 2>&1) || rc=$?
    ((rc == 1)) || expect_failed "the cookie is in a file of the rig" "no file with it (grep exits 1; it exited $rc)" "$hits"
    pass_note "the cookie is in no log or output of the rig"
    rig_profile_delete oc-stock
    oc_stock_registration_end
    pass_note "openconnect's registration is taken over again"
}

E2E_TESTS+=(t_openconnect_stock)
# A stock VPN configures the root namespace: no leak monitor (lib/leak.sh).
E2E_UNISOLATED+=(t_openconnect_stock)

# ---- isolated -------------------------------------------------------------------------------------

# NS TUN: the ifindex of tun TUN in namespace NS (the root namespace when NS is empty).
oc_ifindex() { rig_sb ip ${1:+-n "$1"} -o link show dev "$2" | cut -d: -f1; }

# NAME NS [KEY=VALUE...]: the isolated openconnect profile NAME in namespace NS, with a fresh cookie.
oc_isolated_profile() {
    rig_oc_profile "$1" netns-isolate=yes "netns-name=$2" "${@:3}"
}

# NAME NS: what a user checks once the isolated openconnect VPN NAME is up in namespace NS. The tun's
# name goes to OC_TUN.
assert_oc_isolated() {
    local name=$1 ns=$2 RIG_PROBE_IP=$RIG_OC_DNS_IP
    expect_activated "NM does not report $name activated" "$name"
    expect_proc_running "the plugin shim is not what NM ran" nm-vpn-netns-se
    expect_proc_running "the shim did not run the stock openconnect plugin" nm-openconnect-
    expect_netns "namespace $ns is not visible in the sandbox's main mount namespace" "$ns"
    OC_TUN=$(oc_links "$ns")
    expect_match "no single vpnN tun in $ns" '^vpn[0-9]+$' "$OC_TUN"
    expect_eq "a vpnN tun is in the root namespace" "" "$(oc_links)"
    expect_match "the tun in $ns lacks an address of the pool" 'inet 198\.19\.16\.' \
        "$(rig_sb ip -n "$ns" -4 addr show dev "$OC_TUN" 2>&1)"
    pass_note "NM reports $name activated; $OC_TUN is in $ns with $(rig_sb ip -n "$ns" -4 -o addr show dev "$OC_TUN" | awk '{print $4}'), no vpnN in the root namespace"
    expect_ping "no ping to $RIG_OC_DNS_IP from $ns" 10 rig_ns "$ns"
    expect_no_ping "$RIG_OC_DNS_IP answers from the root namespace" rig_sb
    pass_note "$RIG_OC_DNS_IP answers from $ns and not from the root namespace"
    assert_root_clean
    expect_no_match "the openconnect VPN's DNS is in the root resolv.conf" "$RIG_OC_DNS_IP" "$(rig_sb cat /etc/resolv.conf)"
    pass_note "the root namespace has no tun, no VPN route or address, no VPN DNS"
    expect_sb_file_line "resolv.conf of $ns lacks the pushed DNS" "nameserver $RIG_OC_DNS_IP" "/etc/netns/$ns/resolv.conf"
    expect_sb_file_line "resolv.conf of $ns lacks the pushed domain" "search $RIG_DNS_DOMAIN" "/etc/netns/$ns/resolv.conf"
    expect_sb_file_line "nsswitch.conf of $ns does not say hosts: files dns" 'hosts: files dns' "/etc/netns/$ns/nsswitch.conf"
    expect_match "$RIG_OC_DNS_NAME does not resolve in $ns" "^$RIG_OC_DNS_IP " \
        "$(rig_ns "$ns" getent hosts "$RIG_OC_DNS_NAME" 2>&1)"
    expect_cmd_fails "$RIG_OC_DNS_NAME resolves in the root namespace" rig_sb getent hosts "$RIG_OC_DNS_NAME"
    pass_note "DNS in $ns: the pushed server and domain; $RIG_OC_DNS_NAME resolves there only"
}

# NAME NS: the split include. ocserv pushes one route and NM-openconnect's helper sends never-default
# with it (NM-openconnect 1.2.8 src/nm-openconnect-service-openconnect-helper.c:main sets it whenever
# a CISCO_SPLIT_INC route exists), so the
# namespace has no default route and reaches only the split network and the pool: the rig's
# internet address, which answers from the root namespace (the control), does not answer from NS,
# though ocserv's side would answer it through the tunnel as it answers the split network.
assert_oc_split() {
    local name=$1 ns=$2 RIG_PROBE_IP=$RIG_SERVER_IP routes
    routes=$(rig_sb ip -n "$ns" route show)
    expect_no_match "$ns has a default route despite the split include" '^default' "$routes"
    expect_match "$ns has no route to the split network" "^$RIG_OC_SPLIT/24 " "$routes"
    expect_ping "$RIG_SERVER_IP does not answer from the root namespace (control)" 5 rig_sb
    expect_no_ping "$RIG_SERVER_IP, outside the split routes, answers from $ns" rig_ns "$ns"
    pass_note "split include: $ns routes only $(grep -oE '^[0-9./]+' <<<"$routes" | paste -sd' '); $RIG_SERVER_IP answers from the root namespace, not from $ns"
}

# VPN.BANNER of active connection $1, one line a line. As cli_banner (tests-cli-enable.sh) reads it,
# from the active group in terse mode, where nmcli escapes a newline as \n as well as `\` and `:`.
oc_banner() {
    rig_sb nmcli -t -f active connection show "$1" | sed -n 's/^VPN\.BANNER://p' |
        perl -pe 's/\\(.)/$1 eq "n" ? "\n" : $1/ge'
}

# NAME NS: NM's banner for the VPN holds ocserv's banner and, last, our line naming the namespace.
assert_oc_banner() {
    local name=$1 ns=$2 banner
    banner=$(oc_banner "$name")
    expect_line "VPN.BANNER lacks the server's banner" "$RIG_OC_BANNER" "$banner"
    expect_eq "VPN.BANNER does not end with the namespace line" \
        "This VPN is isolated in network namespace \"$ns\": run apps there with: nm-vpn-netns exec $ns -- COMMAND" \
        "$(tail -n1 <<<"$banner")"
    pass_note "VPN.BANNER: ${banner//$'\n'/ | }"
}

# NS BEFORE: after down, nothing of the isolated openconnect VPN in NS is left: no process, namespace,
# /etc/netns entry, record or tun, and the root namespace is as in snapshot BEFORE.
assert_oc_gone() {
    local ns=$1 before=$2
    expect_procs_gone "a process of the openconnect VPN remains after down" 15 "${OC_PROCS[@]}" nm-vpn-netns-se
    expect_netns_gone "namespace $ns remains after down" "$ns" 10
    expect_sb_absent "/etc/netns/$ns remains after down" "/etc/netns/$ns" 10
    expect_sb_absent "the record of $ns remains after down" "/run/nm-vpn-netns/$ns" 10
    expect_within "a vpnN tun is in the root namespace after down" 10 oc_no_root_tun
    expect_snapshot "the root namespace differs from before activation" "$before" 10
    pass_note "after down: no process, namespace, /etc/netns/$ns, record or tun; the root namespace is as before"
}
# No vpnN tun in the root namespace; else prints them.
oc_no_root_tun() {
    local tuns
    tuns=$(oc_links)
    [[ -n $tuns ]] || return 0
    printf '%s\n' "$tuns"
    return 1
}

# NAME NS BEFORE: the negative controls outside the VPN's life: the root namespace reaches neither
# the VPN's side nor its name, and namespace NS does not exist.
assert_oc_outside() {
    local RIG_PROBE_IP=$RIG_OC_DNS_IP
    expect_no_ping "$RIG_OC_DNS_IP answers from the root namespace ($1, negative control)" rig_sb
    expect_cmd_fails "$RIG_OC_DNS_NAME resolves in the root namespace ($1, negative control)" \
        rig_sb getent hosts "$RIG_OC_DNS_NAME"
    expect_cmd_fails "namespace $2 exists ($1, negative control)" rig_ns "$2" true
}

# Acceptance of isolated openconnect: a profile with netns-isolate=yes up through nmcli, then
# through libnm as GNOME's switch does; each time the namespace reaches the server's side and
# resolves the name only its DNS knows, the root namespace has nothing of it, and down releases all.
t_openconnect_isolated() {
    local name=oc-work ns=oc-work before how
    before=$(rig_snapshot)
    for how in nmcli libnm; do
        assert_oc_outside "before up through $how" "$ns"
        oc_isolated_profile "$name" "$ns"
        if [[ $how == nmcli ]]; then
            expect_cmd_ok "nmcli connection up failed" rig_up_nmcli "$name"
        else
            expect_cmd_ok "libnm's activation failed" rig_up_libnm "$name"
        fi
        pass_note "up through $how"
        assert_oc_isolated "$name" "$ns"
        assert_oc_split "$name" "$ns"
        assert_oc_banner "$name" "$ns"
        if [[ $how == nmcli ]]; then
            expect_cmd_ok "nmcli connection down failed" rig_down_nmcli "$name"
        else
            expect_cmd_ok "libnm's deactivation failed" rig_down_libnm "$name"
        fi
        assert_oc_gone "$ns" "$before"
        assert_oc_outside "after down through $how" "$ns"
    done
    rig_profile_delete "$name"
}

# NAME NS: the VPN NAME up, in namespace NS or, when NS is empty, as stock in the root namespace; a
# probe prefix for it goes to OC_IN.
oc_up() {
    local name=$1 ns=$2
    OC_IN=(rig_sb)
    [[ -z $ns ]] || OC_IN=(rig_ns "$ns")
    expect_cmd_ok "nmcli connection up $name failed" rig_up_nmcli "$name"
    expect_activated "NM does not report $name activated" "$name"
    OC_TUN=$(oc_links "$ns")
    expect_match "no single vpnN tun for $name" '^vpn[0-9]+$' "$OC_TUN"
    RIG_PROBE_IP=$RIG_OC_DNS_IP expect_ping "no ping to $RIG_OC_DNS_IP through $name" 10 "${OC_IN[@]}"
}

# NetworkManager's VPN state changes as its clients see them: the VpnStateChanged signals of the
# active VPN connections (NM's introspection org.freedesktop.NetworkManager.VPN.Connection.xml), watched
# by dbus-monitor in the sandbox from oc_vpn_watch until oc_vpn_unwatch. Not NM's log: at level INFO
# it logs no state of a VPN after "starting".
oc_vpn_watch() {
    rm -f "$RIG_W/vpn-states.pid"
    rig_sb sh -c "echo \$\$ >$RIG_IN/vpn-states.pid; exec dbus-monitor --system \
        \"type='signal',interface='org.freedesktop.NetworkManager.VPN.Connection',member='VpnStateChanged'\"" \
        >"$RIG_W/vpn-states.out" 2>&1 &
    expect_within "dbus-monitor did not start" 5 test -s "$RIG_W/vpn-states.pid"
    # Once it monitors, it prints the bus's NameAcquired for its own name: no signal after that is missed.
    expect_within "dbus-monitor did not subscribe" 5 test -s "$RIG_W/vpn-states.out"
}
oc_vpn_unwatch() { rig_sb kill "$(cat "$RIG_W/vpn-states.pid")" 2>/dev/null || true; }

# The VPN states and reasons the watch saw, one "state STATE reason REASON" a line, as numbers
# (NMVpnConnectionState: 5 activated, 6 failed, 7 disconnected; NMActiveConnectionStateReason).
oc_vpn_states() {
    awk '/member=VpnStateChanged/ {getline s; getline r; split(s, a, " "); split(r, b, " ")
        print "state " a[2] " reason " b[2]}' "$RIG_W/vpn-states.out"
}
oc_vpn_state_seen() { output_matches "^state $1 " oc_vpn_states; }

# The ids of the sessions that ocserv's log $1 starts, in order.
oc_sessions() { grep -oE "initiating session for user '$RIG_VPN_USER' \(session: [^)]+\)" <<<"$1" | sed 's/.*session: //; s/)$//' || true; }

# The lines of the rig's log $1 after line $2 (a count from `wc -l`).
log_since() { tail -n +"$(($2 + 1))" "$RIG_W/$1"; }

# NAME NS: the underlay cut for longer than dead-peer detection, then restored. ocserv pushes dpd 5:
# openconnect declares the peer dead after ~10 s of silence (openconnect mainloop.c:keepalive_action)
# and reconnects with its cookie (ssl.c:ssl_reconnect); ocserv tears the old worker down after 3*dpd at
# its next periodic check, every 30 s (ocserv worker-vpn.c:periodic_check). openconnect keeps its tun
# open across the reconnect and NM-openconnect's helper sends no new config (it acts only on
# reason=connect), so nothing of NM, the shim or the agent runs. The cut lasts 50 s: past the
# client's dead-peer detection and the server's teardown, well under the cookie's life (cookie-timeout
# 300). Under a silent drop openconnect's
# connect waits out the kernel's SYN retransmits (up to ~127 s, net.ipv4.tcp_syn_retries 6), so the
# reconnect comes at the next SYN after the restore, or at the next attempt after one timed out (10
# s, 20 s, ... apart: openconnect ssl.c, RECONNECT_INTERVAL_MIN); 180 s bounds that.
oc_reconnect() {
    local name=$1 ns=$2 tun ifindex pid oclines session log restored RIG_PROBE_IP=$RIG_OC_DNS_IP
    oc_up "$name" "$ns"
    tun=$OC_TUN
    ifindex=$(oc_ifindex "$ns" "$tun")
    pid=$(sb_pid openconnect)
    oclines=$(wc -l <"$RIG_W/ocserv.log")
    session=$(oc_sessions "$(cat "$RIG_W/ocserv.log")" | tail -1)
    oc_vpn_watch
    trap 'rig_underlay_restore; oc_vpn_unwatch' EXIT
    rig_underlay_cut
    expect_no_ping "the tunnel answers with the underlay cut" "${OC_IN[@]}"
    # The fault's length, not a timed check.
    sleep 50
    expect_no_ping "the tunnel answers after 50 s of the underlay cut" "${OC_IN[@]}"
    expect_activated "NM does not report $name activated with the underlay cut" "$name"
    expect_eq "the tun is not where it was during the cut" "$tun" "$(oc_links "$ns")"
    pass_note "underlay cut for 50 s: no answer through the tunnel; NM still reports $name activated; $tun is where it was"
    rig_underlay_restore
    restored=$SECONDS
    expect_ping "traffic did not come back within 180 s of the restore" 180 "${OC_IN[@]}"
    pass_note "traffic back $((SECONDS - restored)) s after the restore (noisy: the next SYN or retry of openconnect's)"
    # The session is the cookie's (ocserv sec-mod-db.c): a reconnect on the same cookie starts the same
    # session again, with no new login.
    log=$(log_since ocserv.log "$oclines")
    expect_line "ocserv did not start session $session again after the cut" "$session" "$(oc_sessions "$log")"
    expect_no_match "the client logged in anew instead of presenting its cookie" 'authenticate user' "$log"
    grep -E 'closing session|initiating session|disconnected' <<<"$log" | sed 's/^/    ocserv: /'
    expect_eq "another openconnect runs after the reconnect" "$pid" "$(sb_pid openconnect)"
    expect_eq "the tun changed" "$tun" "$(oc_links "$ns")"
    expect_eq "the tun's ifindex changed" "$ifindex" "$(oc_ifindex "$ns" "$tun")"
    expect_activated "NM does not report $name activated after the reconnect" "$name"
    pass_note "traffic is back; ocserv took the session back; the same openconnect (pid $pid) on the same $tun (ifindex $ifindex)"
    oc_vpn_unwatch
    trap - EXIT
    expect_eq "NM's VPN state changed during the cut or the reconnect" "" "$(oc_vpn_states)"
    pass_note "NM signalled no VPN state change from the cut to after the reconnect"
}

# Acceptance: a forced reconnect while ocserv keeps running (oc_reconnect), for an isolated
# profile: the tun stays in the namespace with its ifindex, and the leak monitor sees nothing.
t_openconnect_reconnect() {
    local name=oc-redial ns=oc-redial before
    before=$(rig_snapshot)
    oc_isolated_profile "$name" "$ns"
    oc_reconnect "$name" "$ns"
    assert_oc_isolated "$name" "$ns"
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli "$name"
    assert_oc_gone "$ns" "$before"
    rig_profile_delete "$name"
}

# Acceptance: ocserv restarted under an isolated VPN. The new ocserv knows no session (the cookies
# lived in the old one's sec-mod), so openconnect's reconnect is refused and it exits
# (openconnect cstp.c: "Cookie is no longer valid, ending session"), or the server's goodbye ends it
# at once; NM-openconnect reports the failure, the VPN goes down, and nothing of it is left.
t_openconnect_server_restart() {
    local name=oc-srv ns=oc-srv before
    before=$(rig_snapshot)
    oc_isolated_profile "$name" "$ns"
    oc_up "$name" "$ns"
    assert_oc_isolated "$name" "$ns"
    oc_vpn_watch
    trap oc_vpn_unwatch EXIT
    rig_ocserv_restart
    pass_note "ocserv restarted (pid $(rig_oc_pid) now)"
    # openconnect retries for up to reconnect_timeout (300 s) only while the server does not answer;
    # the new one answers at once.
    expect_within "NM still reports $name active 60 s after ocserv's restart" 60 nm_inactive "$name"
    expect_within "NM did not signal the VPN failed" 5 oc_vpn_state_seen 6
    oc_vpn_unwatch
    trap - EXIT
    pass_note "NM signalled the VPN's states: $(oc_vpn_states | paste -sd, -)"
    assert_oc_gone "$ns" "$before"
    assert_oc_outside "after the failure" "$ns"
    rig_profile_delete "$name"
}

# ROUND NAME NS: one up/down of the persistent profile NAME: exactly one tun (and it the VPN's) in
# NS while it is up, none after down, and the namespace stays.
oc_persistent_round() {
    local round=$1 name=$2 ns=$3 tuns
    oc_isolated_profile "$name" "$ns" netns-persistent=yes
    oc_up "$name" "$ns"
    tuns=$(rig_sb ip -n "$ns" -d -o link show | grep -c ' tun ') || true
    expect_eq "not exactly one tun in $ns while up (round $round)" 1 "$tuns"
    assert_root_clean
    pass_note "round $round: one tun in $ns ($OC_TUN, ifindex $(oc_ifindex "$ns" "$OC_TUN")), none in the root namespace"
    expect_cmd_ok "nmcli connection down failed (round $round)" rig_down_nmcli "$name"
    expect_procs_gone "a process of the openconnect VPN remains after down" 15 "${OC_PROCS[@]}" nm-vpn-netns-se
    expect_netns "the persistent namespace $ns went away on down (round $round)" "$ns"
    expect_within "a tun is left in $ns after down (round $round)" 10 ns_no_tun "$ns"
    expect_within "a vpnN tun is in the root namespace after down (round $round)" 10 oc_no_root_tun
    expect_no_match "a route of the VPN is left in $ns after down (round $round)" '198\.19\.' \
        "$(rig_sb ip -n "$ns" route show table all)"
    assert_root_clean
    pass_note "round $round: after down $ns stays, with no tun and no route of the VPN"
}
# No tun in namespace $1; else prints them.
ns_no_tun() {
    local tuns
    tuns=$(rig_sb ip -n "$1" -d -o link show | grep ' tun ') || return 0
    printf '%s\n' "$tuns"
    return 1
}

# NAME NS: the persistent profile NAME gone, and its kept namespace NS and /etc/netns entry with it,
# however the scenario ended.
oc_persistent_end() {
    rig_down_nmcli "$1" >/dev/null 2>&1 || true
    rig_profile_delete "$1"
    rig_sb ip netns del "$2" 2>/dev/null || true
    rig_sb rm -rf "/etc/netns/$2"
}

# Acceptance: a persistent profile, twice up and down: one tun inside while up, none after down;
# the namespace outlives down.
t_openconnect_persistent() {
    local name=oc-keep ns=oc-keep before
    before=$(rig_snapshot)
    trap "oc_persistent_end $name $ns" EXIT
    oc_persistent_round 1 "$name" "$ns"
    oc_persistent_round 2 "$name" "$ns"
    trap - EXIT
    oc_persistent_end "$name" "$ns"
    expect_snapshot "the root namespace differs from before, once the kept namespace is deleted" "$before" 10
    pass_note "two cycles: one tun inside while up, none after down; the namespace kept until the rig deleted it"
}

E2E_TESTS+=(t_openconnect_isolated t_openconnect_reconnect t_openconnect_server_restart t_openconnect_persistent)
