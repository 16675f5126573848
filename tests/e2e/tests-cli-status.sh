# shellcheck shell=bash
# End-to-end scenarios of `nm-vpn-netns status`, `list` and `delete`, as root in the sandbox and as
# a user without root.

# Runs `nm-vpn-netns ARGS…` in the sandbox as uid 65534.
cli_as_nobody() {
    rig_sb setpriv --reuid 65534 --regid 65534 --clear-groups nm-vpn-netns "$@"
}

# The VPN of uuid $2 in the output $1 of `status --json`.
status_vpn() { json_find "$(json_path "$1" vpns)" uuid "$2"; }

# `status --json` field by field for an isolated VPN up on the rig, each against what `ip` and the
# files show; then as a user without root; then its leak check, shown to fail on a route into the
# VPN planted in the root namespace (the sandbox's), and to pass again once it is gone.
t_cli_status() {
    local ns=clistat uuid out vpn rc tun want default routes others
    rig_profile_keyfile "$ns" 1 ca netns-isolate=yes "netns-name=$ns"
    uuid=$(rig_sb nmcli -g connection.uuid connection show "$ns")
    expect_cmd_ok "activation failed" rig_up_nmcli "$ns"
    rc=0 && out=$(rig_sb nm-vpn-netns status --json) || rc=$?
    expect_eq "status --json did not exit 0: $out" 0 "$rc"
    # Other scenarios may have left records of their own: this VPN is found by its uuid.
    vpn=$(status_vpn "$out" "$uuid")
    [[ -n $vpn ]] || expect_failed "status --json does not show $ns" "a VPN of uuid $uuid" "$out"
    expect_json_path "not the connection's id" "$vpn" id "$ns"
    expect_json_path "not the connection's uuid" "$vpn" uuid "$uuid"
    expect_json_path "not its namespace" "$vpn" netns "$ns"
    expect_json_path "not NM's state" "$vpn" state activated
    expect_json_path "persistent without netns-persistent" "$vpn" persistent false
    expect_json_path "not created by nm-vpn-netns" "$vpn" created true
    expect_json_path "its keys are not said to be in vpn.data" "$vpn" keys_from vpn.data
    expect_json_path "a mirror the profile does not have" "$vpn" mirror false
    pass_note "status --json: id, uuid, namespace $ns, activated, not persistent, created by nm-vpn-netns, keys in vpn.data, no mirror"

    tun=$(rig_sb ip -n "$ns" -o link show type tun | awk -F': ' '{print $2}')
    expect_json_path "not the tun of ip -n $ns link" "$vpn" tun.name "$tun"
    want=$(rig_sb ip -n "$ns" -o addr show dev "$tun" | awk '{print $4}' |
        /usr/bin/python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().split(), separators=(",", ":")))')
    expect_json_path "not the addresses of ip -n $ns addr" "$vpn" tun.addresses "$want"
    expect_match "the tun lacks its pushed address" '"198\.19\.0\.201/24"' "$want"
    routes=$(json_path "$vpn" routes)
    # The default route as `ip` shows it, in status's words: [via GATEWAY] dev LINK.
    default=$(rig_sb ip -n "$ns" -4 route show default |
        awk '{s = $1; for (i = 2; i < NF; i++) if ($i == "via" || $i == "dev") s = s " " $i " " $(i + 1); print s}')
    expect_eq "the default route inside is not through the tun" "default dev $tun" "${default/ via */ dev $tun}"
    expect_contains "not the default route of ip -n $ns route" "\"$default\"" "$routes"
    expect_contains "no route to the tun's subnet" "\"198.19.0.0/24 dev $tun\"" "$routes"
    others=$(/usr/bin/python3 -c 'import json, sys
print("\n".join(r for r in json.loads(sys.argv[1]) if not r.endswith(" dev " + sys.argv[2])))' "$routes" "$tun")
    expect_eq "a route inside leaves through another link than $tun" "" "$others"
    expect_json_path "not the VPN's DNS server" "$vpn" dns.servers "[\"$RIG_TUN_SERVER_IP\"]"
    expect_json_path "not the VPN's domain" "$vpn" dns.search "[\"$RIG_DNS_DOMAIN\"]"
    pass_note "status --json: tun $tun with $want, its routes ($routes), DNS $RIG_TUN_SERVER_IP search $RIG_DNS_DOMAIN"
    expect_json_path "the leak check failed" "$vpn" leak_check '{"leaks":[],"passed":true}'
    expect_json_path "leak_free is not true" "$out" leak_free true
    rc=0 && out=$(rig_sb nm-vpn-netns status) || rc=$?
    expect_eq "status did not exit 0: $out" 0 "$rc"
    expect_match "the text lacks the passed leak check" '^  leak check +passed$' "$out"
    pass_note "the leak check passes, in JSON and in text"

    rc=0 && out=$(cli_as_nobody status --json) || rc=$?
    expect_eq "status --json as uid 65534 did not exit 0: $out" 0 "$rc"
    vpn=$(status_vpn "$out" "$uuid")
    expect_json_path "uid 65534 does not see the VPN" "$vpn" uuid "$uuid"
    expect_json_path "uid 65534 does not see its namespace" "$vpn" netns "$ns"
    expect_json_path "uid 65534 does not see its state" "$vpn" state activated
    local f
    for f in created tun routes dns leak_check; do
        expect_json_path "$f is not marked for root" "$vpn" "$f" '{"unavailable":"needs root"}'
    done
    expect_json_path "leak_free without a check" "$out" leak_free null
    pass_note "as uid 65534: what NM shows, and created, tun, routes, dns, leak_check marked \"needs root\""

    # A route into the VPN's subnet in the root namespace is a leak; the leak monitor, which would
    # rightly fail the scenario for it, stops first, having seen none until here.
    leak_watch_end
    local planted="198.19.0.0/24 via $RIG_SERVER_IP dev uplink0"
    # shellcheck disable=SC2064 # the route as it is now
    trap "rig_sb ip route del $planted 2>/dev/null || true" EXIT
    # shellcheck disable=SC2086 # the route's words
    rig_sb ip route add $planted
    rc=0 && out=$(rig_sb nm-vpn-netns status --json) || rc=$?
    expect_eq "status --json did not exit 2 on a leak: $out" 2 "$rc"
    vpn=$(status_vpn "$out" "$uuid")
    expect_json_path "the leak check passed" "$vpn" leak_check.passed false
    expect_json_path "leak_free is not false" "$out" leak_free false
    expect_contains "the leak does not name the route" \
        "route into the VPN's network 198.19.0.0/24: $planted" "$(json_path "$vpn" leak_check.leaks.0)"
    rc=0 && out=$(rig_sb nm-vpn-netns status) || rc=$?
    expect_eq "status did not exit 2 on a leak" 2 "$rc"
    expect_match "the text does not say FAILED" '^  leak check +FAILED:$' "$out"
    pass_note "with $planted in the root namespace: exit 2, the leak check names the route"
    # shellcheck disable=SC2086
    rig_sb ip route del $planted
    trap - EXIT
    rc=0 && out=$(rig_sb nm-vpn-netns status --json) || rc=$?
    expect_eq "status --json did not exit 0 once the route was gone: $out" 0 "$rc"
    vpn=$(status_vpn "$out" "$uuid")
    expect_json_path "the leak check failed once the route was gone" "$vpn" leak_check.passed true
    pass_note "the route removed: exit 0, the leak check passes again"

    rig_down_nmcli "$ns" >/dev/null
    expect_vpn_gone
    expect_netns_gone "namespace $ns remains after down" "$ns" 10
    rc=0 && out=$(rig_sb nm-vpn-netns status --json) || rc=$?
    expect_eq "status --json did not exit 0 with no VPN" 0 "$rc"
    expect_eq "the VPN is shown after down" "" "$(status_vpn "$out" "$uuid")"
    rig_profile_delete "$ns"
}

# `list` and `delete` of a persistent namespace: refused while its VPN is up; listed after down;
# refused while a process runs inside, naming it; deleted with --force, which ends it; nothing left.
t_cli_delete() {
    local ns=clidel out rc sleeper
    rig_profile_keyfile "$ns" 2 ca netns-isolate=yes "netns-name=$ns" netns-persistent=yes
    expect_cmd_ok "activation failed" rig_up_nmcli "$ns"
    # Other scenarios may have left records of their own (t_persistent deletes its namespace behind
    # the agent's back): only this namespace's entry counts.
    out=$(json_find "$(rig_sb nm-vpn-netns list --json)" netns "$ns")
    expect_json_path "not listed as connected" "$out" state connected
    rc=0 && out=$(rig_sb nm-vpn-netns delete "$ns" 2>&1) || rc=$?
    expect_eq "delete of a connected namespace did not exit 1: $out" 1 "$rc"
    expect_contains "the refusal does not say why" "holds a connected VPN" "$out"
    expect_netns "the refused delete removed $ns" "$ns"
    pass_note "while up: listed as connected; delete refused ($out)"

    rig_down_nmcli "$ns" >/dev/null
    expect_vpn_gone
    expect_netns "the persistent namespace went away on down" "$ns"
    out=$(json_find "$(rig_sb nm-vpn-netns list --json)" netns "$ns")
    expect_json_path "not listed" "$out" netns "$ns"
    expect_json_path "not listed as persistent" "$out" state persistent
    expect_json_path "listed as connected" "$out" connected false
    expect_json_path "not created by nm-vpn-netns" "$out" created true
    expect_json_path "its profile is not found" "$out" profile present
    out=$(rig_sb nm-vpn-netns list)
    expect_match "the table lacks the namespace" "^$ns +persistent +yes +- +$ns +" "$out"
    pass_note "after down: list shows $ns, persistent, created by nm-vpn-netns, its profile present"

    rig_sb sh -c "echo \$\$ >$RIG_IN/clidel-sleep.pid; exec ip netns exec $ns sleep 300" >/dev/null 2>&1 &
    expect_within "the process inside did not start" 5 test -s "$RIG_W/clidel-sleep.pid"
    sleeper=$(cat "$RIG_W/clidel-sleep.pid")
    rig_wait 5 output_matches '^sleep$' rig_sb cat "/proc/$sleeper/comm" ||
        fail "process $sleeper is not sleep"
    rc=0 && out=$(rig_sb nm-vpn-netns delete "$ns" 2>&1) || rc=$?
    expect_eq "delete with a process inside did not exit 1: $out" 1 "$rc"
    expect_contains "the refusal does not name the process" "$sleeper (sleep)" "$out"
    expect_netns "the refused delete removed $ns" "$ns"
    expect_cmd_ok "the refused delete ended the process" rig_sb kill -0 "$sleeper"
    pass_note "with process $sleeper inside: refused, naming it ($out)"

    rc=0 && out=$(rig_sb nm-vpn-netns delete --force "$ns" 2>&1) || rc=$?
    expect_eq "delete --force did not exit 0: $out" 0 "$rc"
    expect_contains "delete --force does not say it ended the process" "ended: $sleeper (sleep)" "$out"
    rig_wait 5 sb_pid_gone "$sleeper" || fail "process $sleeper still runs after delete --force"
    wait
    expect_netns_gone "delete --force left /run/netns/$ns" "$ns" 5
    expect_sb_absent "delete --force left /etc/netns/$ns" "/etc/netns/$ns"
    expect_sb_absent "delete --force left the record" "/run/nm-vpn-netns/$ns"
    expect_sb_absent "delete --force left the durable record" "/var/lib/nm-vpn-netns/$ns"
    expect_eq "still listed" "" "$(json_find "$(rig_sb nm-vpn-netns list --json)" netns "$ns")"
    pass_note "delete --force: process $sleeper ended; no namespace, /etc/netns entry or record left"

    rc=0 && out=$(rig_sb nm-vpn-netns delete "$ns" 2>&1) || rc=$?
    expect_eq "a second delete did not exit 1" 1 "$rc"
    expect_contains "an unknown namespace is not said so" "keeps no namespace named $ns" "$out"
    rc=0 && out=$(cli_as_nobody delete "$ns" 2>&1) || rc=$?
    expect_eq "delete as uid 65534 did not exit 1" 1 "$rc"
    expect_contains "uid 65534 is not told it needs root" "needs root" "$out"
    pass_note "an unknown namespace, and a user without root, are refused with the reason"
    rig_profile_delete "$ns"
}

E2E_TESTS+=(t_cli_status t_cli_delete)
