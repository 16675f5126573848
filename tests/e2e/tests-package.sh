# shellcheck shell=bash
# The .deb on the rig, as a user meets it: installed over `make install` while NetworkManager runs,
# a stock network-manager-openvpn reinstalled and upgraded under it, network-manager-openconnect
# removed and installed again under it, removed with a VPN up, purged. `make deb` built the
# package; `tests/e2e/deps.sh` fetched the stock plugins' .debs.

PKG_STOCK=$(rig_stock_name openvpn)
PKG_DIVERTED=$PKG_STOCK.distrib

# The package `make deb` built for the changelog's version, as a path inside the sandbox.
pkg_deb() {
    local version
    version=$(sed -n '1s/^nm-vpn-netns (\([^)]*\)).*/\1/p' "$RIG_SRC/packaging/debian/changelog")
    echo "$RIG_SRC_IN/target/debian/nm-vpn-netns_${version}_amd64.deb"
}

pkg_inode() { rig_sb stat -c %i "$1"; }

# WHAT OWNER: each stock registration is diverted by OWNER (LOCAL: make install).
expect_diverted_by() {
    local plugin
    for plugin in "${RIG_PLUGINS[@]}"; do
        expect_eq "$1: the diversion of $plugin's" "$2" "$(rig_sb dpkg-divert --listpackage "$(rig_stock_name "$plugin")")"
    done
}

# A stock network-manager-openvpn whose .name has one line more, as an upgrade that changes it.
pkg_stock_changed() {
    local dir=$RIG_IN/stock-changed out=$RIG_IN/stock-changed.deb
    rig_sb rm -rf "$dir"
    rig_sb dpkg-deb -R "$RIG_STOCK_DEB_IN" "$dir"
    rig_sb sed -i 's/^supports-hints=true$/&\nsupports-rig-upgrade=true/' "$dir$PKG_STOCK"
    rig_sb sed -i 's/^Version: .*/&+rig1/' "$dir/DEBIAN/control"
    rig_sb dpkg-deb -b "$dir" "$out" >/dev/null
    echo "$out"
}

t_package() {
    local nm_pid inode changed
    [[ -e $RIG_STOCK_DEB ]] || { fail "the stock plugin's .deb is missing" "$RIG_STOCK_DEB" "(none)"; return; }
    [[ -e $RIG_OC_STOCK_DEB ]] || { fail "the stock openconnect plugin's .deb is missing" "$RIG_OC_STOCK_DEB" "(none)"; return; }
    nm_pid=$(rig_nm_pid)
    expect_diverted_by "make install" LOCAL

    expect_cmd_ok "dpkg -i of the package failed" rig_sb dpkg -i "$(pkg_deb)"
    expect_diverted_by "dpkg -i" nm-vpn-netns
    expect_taken_over "installed over make install" openvpn
    expect_taken_over "installed over make install" openconnect
    expect_eq "the package does not own the shim" nm-vpn-netns \
        "$(rig_sb dpkg-query -S /usr/lib/NetworkManager/nm-vpn-netns-service | cut -d: -f1)"
    pass_note "dpkg -i over make install: the package owns both diversions and the files; ours for openvpn and openconnect are as NetworkManager reads them"
    t_isolated_keyfile
    expect_eq "NetworkManager was restarted" "$nm_pid" "$(rig_nm_pid)"
    pass_note "the isolated scenario passes after dpkg -i, with the same NetworkManager (pid $nm_pid)"

    inode=$(pkg_inode "$PKG_STOCK")
    expect_cmd_ok "reinstalling the stock plugin failed" rig_sb dpkg -i "$RIG_STOCK_DEB_IN"
    expect_taken_over "after reinstalling network-manager-openvpn" openvpn
    expect_cmd_ok "the reinstalled stock .name differs from the packaged one" \
        rig_sb cmp "$PKG_DIVERTED" "$RIG_IN/stock-openvpn.name"
    expect_eq "our unchanged .name was rewritten" "$inode" "$(pkg_inode "$PKG_STOCK")"
    t_isolated_keyfile
    pass_note "a reinstalled network-manager-openvpn lands on the diverted path; our registration stays"

    changed=$(pkg_stock_changed)
    expect_cmd_ok "installing a changed stock plugin failed" rig_sb dpkg -i "$changed"
    expect_taken_over "after a stock upgrade that changed its .name" openvpn
    expect_sb_file_line "our .name did not follow the stock upgrade" supports-rig-upgrade=true "$PKG_STOCK"
    expect_ne "our .name was rewritten in place, which NetworkManager never reloads" "$inode" "$(pkg_inode "$PKG_STOCK")"
    t_isolated_keyfile
    expect_cmd_ok "going back to the stock plugin failed" rig_sb dpkg -i "$RIG_STOCK_DEB_IN"
    pass_note "a stock upgrade that changes the .name: ours follows as a new file, and NM uses it"

    pkg_openconnect_later
    pkg_remove_purge_with_vpn_up
    expect_eq "NetworkManager was restarted" "$nm_pid" "$(rig_nm_pid)"
    rig_install
}

# The stock openconnect plugin removed under the package and installed again: the package keeps
# diverting its .name while it is absent, the trigger drops ours with the stock file, and generates
# ours anew when the stock file lands on the diverted path.
pkg_openconnect_later() {
    local stock
    stock=$(rig_stock_name openconnect)
    expect_cmd_ok "removing network-manager-openconnect failed" rig_sb dpkg --remove network-manager-openconnect
    expect_sb_absent "our registration outlived the stock openconnect plugin" "$stock"
    expect_sb_absent "the removed stock plugin left $stock.distrib" "$stock.distrib"
    expect_eq "the package no longer diverts the absent stock file" nm-vpn-netns "$(rig_sb dpkg-divert --listpackage "$stock")"
    expect_cmd_fails "NetworkManager still sees an openconnect registration" rig_sb /usr/bin/python3 \
        "$RIG_SRC_IN/tests/e2e/vpn-registration.py" org.freedesktop.NetworkManager.openconnect "$RIG_SHIM" /dev/null
    pass_note "network-manager-openconnect removed: our registration went with it, the diversion stays"
    expect_cmd_ok "installing network-manager-openconnect again failed" rig_sb dpkg -i "$RIG_OC_STOCK_DEB"
    expect_taken_over "network-manager-openconnect installed under the package" openconnect
    expect_cmd_ok "the installed stock .name differs from the packaged one" \
        rig_sb cmp "$stock.distrib" "$RIG_IN/stock-openconnect.name"
    pass_note "network-manager-openconnect installed under the package: its .name lands diverted, ours follows"
}

# Remove leaves a VPN that is up running; purge refuses until it is down, then restores the stock
# registration byte for byte, deletes what the agent kept (a persistent namespace and its DNS files)
# and leaves nothing of ours.
pkg_remove_purge_with_vpn_up() {
    local before out f
    rig_profile_keyfile kept 2 ca netns-isolate=yes netns-name=kept netns-persistent=yes
    expect_cmd_ok "activating the persistent profile failed" rig_up_nmcli kept
    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli kept
    expect_vpn_gone
    rig_profile_delete kept
    expect_netns "the persistent namespace went away on down" kept
    before=$(rig_snapshot)
    rig_profile_keyfile work 1 ca netns-isolate=yes netns-name=work
    expect_cmd_ok "nmcli connection up failed" rig_up_nmcli work
    expect_cmd_ok "dpkg --remove failed" rig_sb dpkg --remove nm-vpn-netns
    expect_stock_registration "dpkg --remove" openvpn
    expect_stock_registration "dpkg --remove" openconnect
    assert_isolated work work
    pass_note "dpkg --remove: the stock .name files are back, and the isolated VPN that was up stays up"

    out=$(rig_sb dpkg --purge nm-vpn-netns 2>&1) && fail "purge went ahead with a VPN up" "a refusal" "$out"
    expect_contains "purge did not say why it refused" "isolated VPNs are up in namespace(s) work" "$out"
    expect_netns "purge deleted the namespace of a VPN that is up" work
    pass_note "dpkg --purge refuses while the VPN is up: $(grep -m1 'not purging' <<<"$out")"

    expect_cmd_ok "nmcli connection down failed" rig_down_nmcli work
    assert_gone work "$before"
    rig_profile_delete work
    out=$(rig_sb dpkg --purge nm-vpn-netns 2>&1) || fail "dpkg --purge failed once the VPN was down" "success" "$out"
    expect_line "purge did not say it deleted the persistent namespace" "deleted namespace kept" "$out"
    expect_netns_gone "purge left the persistent namespace" kept 1
    expect_sb_absent "purge left /etc/netns/kept" /etc/netns/kept
    expect_stock_registration "dpkg --purge" openvpn
    expect_stock_registration "dpkg --purge" openconnect
    for f in /usr/lib/NetworkManager/nm-vpn-netns-service /usr/libexec/nm-vpn-netns-agent /usr/bin/nm-vpn-netns \
        /usr/share/dbus-1/system.d/io.github.NmVpnNetns.Agent1.conf /run/nm-vpn-netns \
        /usr/share/polkit-1/actions/io.github.NmVpnNetns.exec.policy; do
        expect_sb_absent "purge left $f" "$f"
    done
    pass_note "after down, dpkg --purge: the stock .name files byte for byte, no diversion, nothing of ours"
    pass_note "purge said: $(grep -Ev '^(Reading|Removing|Purging)' <<<"$out" | tr '\n' ';')"
    leak_watch_end
    rig_profile_nmcli stock-after-purge 1
    stock_vpn_roundtrip stock-after-purge nmcli
    rig_profile_delete stock-after-purge
}
E2E_TESTS+=(t_package)
