# shellcheck shell=bash
# `nm-vpn-netns enable` and `disable`, and the mirror of the netns-* keys in the profile's `user`
# setting that survives GNOME's connection editor; the banner line of an isolated VPN.

# vpn.data of profile $1 as nmcli shows it.
cli_vpn_data() { rig_sb nmcli -g vpn.data connection show "$1"; }

# The keyfile behind profile $1, as rig_profile_keyfile made it; NM writes updates back to it.
cli_keyfile() { echo "/etc/NetworkManager/system-connections/$1.nmconnection"; }

# VPN.BANNER of active connection $1, unescaped. `nmcli -g VPN.BANNER` is refused: nmcli takes
# `VPN` for the vpn setting, which has no such property (split_required_fields_for_con_show in
# nmcli's connections.c), so the banner is read from the active group in terse mode, where
# nmcli escapes '"', ':' and '\' with a backslash.
cli_banner() {
    rig_sb nmcli -t -f active connection show "$1" | sed -n 's/^VPN\.BANNER://p' | sed 's/\\\(.\)/\1/g'
}

t_cli_editor_round_trip() {
    local before file
    before=$(rig_snapshot)
    rig_profile_keyfile work 1 ca
    expect_cmd_ok "nm-vpn-netns enable work failed" rig_sb nm-vpn-netns enable work
    pass_note "enable: $EXPECT_OUT"
    expect_match "enable wrote no netns-isolate=yes into vpn.data" '(^|, )netns-isolate = yes(,|$)' "$(cli_vpn_data work)"
    # nmcli 1.42 has no user setting; the keyfile shows it.
    file=$(cli_keyfile work)
    expect_sb_file_line "the keyfile has no [user] group after enable" '[user]' "$file"
    expect_sb_file_line "enable wrote no mirror into user.data" 'io.github.nm-vpn-netns.netns-isolate=yes' "$file"

    # The editor's save: vpn.data loses the keys, the user setting stays.
    expect_cmd_ok "the editor's save through libnm failed" \
        rig_sb /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/libnm-editor-save.py" work
    expect_no_match "vpn.data kept netns-* keys through the editor's save" 'netns-' "$(cli_vpn_data work)"
    expect_match "vpn.data lost the stock keys through the editor's save" 'remote = ' "$(cli_vpn_data work)"
    pass_note "after the editor's save, vpn.data has no netns-* key: $(cli_vpn_data work)"

    expect_cmd_ok "nmcli connection up failed" rig_up_nmcli work
    assert_isolated work work
    expect_match_within "the keys are not back in vpn.data after activation" 10 'netns-isolate = yes' \
        cli_vpn_data work
    expect_sb_file_line "the keyfile lost its [user] group" '[user]' "$file"
    expect_sb_file_line "the keyfile has no netns-isolate=yes in [vpn] after the restore" 'netns-isolate=yes' "$file"
    pass_note "isolated from the mirror; vpn.data has the keys back and the keyfile its [user] group"
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli work
    assert_gone work "$before"

    # Negative control: after disable, the same profile connects un-isolated.
    expect_cmd_ok "nm-vpn-netns disable work failed" rig_sb nm-vpn-netns disable work
    expect_no_match "disable left netns-* keys in vpn.data" 'netns-' "$(cli_vpn_data work)"
    expect_no_match "disable left the mirror in the keyfile" 'io\.github\.nm-vpn-netns\.|^\[user\]' "$(rig_sb cat "$file")"
    pass_note "disable: $EXPECT_OUT"
    leak_watch_end
    expect_cmd_ok "nmcli connection up after disable failed" rig_up_nmcli work
    expect_netns_gone "namespace work exists although isolation was disabled" work
    expect_ping "the un-isolated VPN does not answer from the root namespace" 10 rig_sb
    pass_note "after disable, up is not isolated: no namespace, the tunnel answers from the root namespace"
    rig_down_nmcli work >/dev/null
    expect_vpn_gone
    rig_profile_delete work
    expect_snapshot "something remains" "$before"
}

# WHAT FILE: keyfile FILE still holds the rig's VPN password; the file is never printed.
expect_keyfile_password() {
    rig_sb grep -qxF "password=$RIG_VPN_PASSWORD" "$2" ||
        expect_failed "$1" "the line password=<the rig's password> in $2" "$(rig_sb grep -c '^password=' "$2") password= line(s)"
}

# A profile's stored secret outlives enable, the editor's save and the restore (GetSettings holds no
# secrets, and NM keeps them on an Update2 that carries none): the password profile connects
# isolated from its mirror, and the keyfile keeps the password throughout.
t_cli_enable_keeps_secrets() {
    local before file
    before=$(rig_snapshot)
    rig_profile_keyfile pwvpn 4 ca connection-type=password-tls "username=$RIG_VPN_USER" password-flags=0 \
        "vpn-secrets.password=$RIG_VPN_PASSWORD"
    file=$(cli_keyfile pwvpn)
    expect_keyfile_password "the rig did not store the password" "$file"
    expect_cmd_ok "nm-vpn-netns enable pwvpn failed" rig_sb nm-vpn-netns enable pwvpn
    expect_keyfile_password "enable lost the stored password" "$file"
    expect_cmd_ok "the editor's save through libnm failed" \
        rig_sb /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/libnm-editor-save.py" pwvpn
    expect_cmd_ok "the password profile did not connect isolated from its mirror" rig_up_nmcli pwvpn
    assert_isolated pwvpn pwvpn
    expect_match_within "the keys are not back in vpn.data after activation" 10 'netns-isolate = yes' \
        cli_vpn_data pwvpn
    expect_keyfile_password "the restore lost the stored password" "$file"
    pass_note "the stored password outlived enable, the editor's save and the restore"
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli pwvpn
    assert_gone pwvpn "$before"
    rig_profile_delete pwvpn
}

# enable refuses what it cannot isolate, and names why; the profile stays as it was.
t_cli_enable_refusals() {
    rig_profile_keyfile static 2 ca ipv4.dns=192.0.2.53
    expect_cmd_fails "enable accepted a profile with a static DNS server" rig_sb nm-vpn-netns enable static
    expect_contains "enable did not name ipv4.dns" 'cannot be isolated: ipv4.dns' "$EXPECT_OUT"
    expect_no_match "enable wrote keys although it refused" 'netns-' "$(cli_vpn_data static)"
    pass_note "refused: $EXPECT_OUT"
    rig_profile_delete static
    expect_cmd_fails "enable accepted the ethernet profile uplink" rig_sb nm-vpn-netns enable uplink
    expect_contains "enable did not say uplink is neither an OpenVPN nor an OpenConnect connection" 'is not an OpenVPN or OpenConnect connection' "$EXPECT_OUT"
    pass_note "refused: $EXPECT_OUT"
    expect_cmd_fails "enable found a connection that does not exist" rig_sb nm-vpn-netns enable no-such-vpn
    expect_contains "enable did not say no connection has that name" 'no connection has the id or uuid' "$EXPECT_OUT"
}

# The banner NM shows for an isolated VPN ends with the namespace's line; a pass-through VPN has none.
t_cli_banner() {
    local want banner
    rig_profile_keyfile banner 3 ca netns-isolate=yes netns-name=bannerns
    expect_cmd_ok "nmcli connection up failed" rig_up_nmcli banner
    want='This VPN is isolated in network namespace "bannerns": run apps there with: nm-vpn-netns exec bannerns -- COMMAND'
    banner=$(cli_banner banner)
    expect_eq "VPN.BANNER does not end with the namespace line" "$want" "$(tail -n1 <<<"$banner")"
    pass_note "VPN.BANNER: $banner"
    rig_down_nmcli banner >/dev/null
    expect_vpn_gone
    rig_profile_delete banner
    leak_watch_end
    rig_profile_keyfile nobanner 3 ca
    expect_cmd_ok "nmcli connection up of the pass-through profile failed" rig_up_nmcli nobanner
    banner=$(cli_banner nobanner)
    expect_not_contains "a pass-through VPN's banner names a namespace" 'isolated in network namespace' "$banner"
    pass_note "a pass-through VPN's banner has no such line (negative control)"
    rig_down_nmcli nobanner >/dev/null
    expect_vpn_gone
    rig_profile_delete nobanner
}

E2E_TESTS+=(t_cli_editor_round_trip t_cli_enable_keeps_secrets t_cli_enable_refusals t_cli_banner)
