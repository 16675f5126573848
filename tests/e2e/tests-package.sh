# shellcheck shell=bash
# The .deb on the rig, as a user meets it: installed over `make install` while NetworkManager runs,
# a stock network-manager-openvpn reinstalled and upgraded under it, removed with a VPN up, purged.
# `make deb` built the package; `tests/e2e/deps.sh` fetched the stock plugin's .deb.

PKG_STOCK=/usr/lib/NetworkManager/VPN/nm-openvpn-service.name
PKG_DIVERTED=$PKG_STOCK.distrib
PKG_SHIM_LINE=program=/usr/lib/NetworkManager/nm-vpn-netns-service

# The package `make deb` built for the changelog's version, as a path inside the sandbox.
pkg_deb() {
    local version
    version=$(sed -n '1s/^nm-vpn-netns (\([^)]*\)).*/\1/p' "$RIG_SRC/packaging/debian/changelog")
    echo "$RIG_SRC_IN/target/debian/nm-vpn-netns_${version}_amd64.deb"
}

pkg_inode() { rig_sb stat -c %i "$1"; }

# Our .name is the diverted stock file with program= alone changed.
expect_registered() {
    expect_sb_file_line "$1: our .name does not point at the shim" "$PKG_SHIM_LINE" "$PKG_STOCK"
    expect_same "$1: our .name differs from the diverted stock one in more than program=" \
        "$(rig_sb sed '/^program=/d' "$PKG_DIVERTED")" "$(rig_sb sed '/^program=/d' "$PKG_STOCK")"
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
    nm_pid=$(rig_nm_pid)
    expect_eq "make install did not divert locally" LOCAL "$(rig_sb dpkg-divert --listpackage "$PKG_STOCK")"

    expect_cmd_ok "dpkg -i of the package failed" rig_sb dpkg -i "$(pkg_deb)"
    expect_eq "the package does not own the diversion" nm-vpn-netns "$(rig_sb dpkg-divert --listpackage "$PKG_STOCK")"
    expect_registered "installed over make install"
    expect_eq "the package does not own the shim" nm-vpn-netns \
        "$(rig_sb dpkg-query -S /usr/lib/NetworkManager/nm-vpn-netns-service | cut -d: -f1)"
    pass_note "dpkg -i over make install: the package owns the diversion and the files"
    t_isolated_keyfile
    expect_eq "NetworkManager was restarted" "$nm_pid" "$(rig_nm_pid)"
    pass_note "the isolated scenario passes after dpkg -i, with the same NetworkManager (pid $nm_pid)"

    inode=$(pkg_inode "$PKG_STOCK")
    expect_cmd_ok "reinstalling the stock plugin failed" rig_sb dpkg -i "$RIG_STOCK_DEB_IN"
    expect_registered "after reinstalling network-manager-openvpn"
    expect_cmd_ok "the reinstalled stock .name differs from the packaged one" \
        rig_sb cmp "$PKG_DIVERTED" "$RIG_IN/stock.name"
    expect_eq "our unchanged .name was rewritten" "$inode" "$(pkg_inode "$PKG_STOCK")"
    t_isolated_keyfile
    pass_note "a reinstalled network-manager-openvpn lands on the diverted path; our registration stays"

    changed=$(pkg_stock_changed)
    expect_cmd_ok "installing a changed stock plugin failed" rig_sb dpkg -i "$changed"
    expect_registered "after a stock upgrade that changed its .name"
    expect_sb_file_line "our .name did not follow the stock upgrade" supports-rig-upgrade=true "$PKG_STOCK"
    expect_ne "our .name was rewritten in place, which NetworkManager never reloads" "$inode" "$(pkg_inode "$PKG_STOCK")"
    t_isolated_keyfile
    expect_cmd_ok "going back to the stock plugin failed" rig_sb dpkg -i "$RIG_STOCK_DEB_IN"
    pass_note "a stock upgrade that changes the .name: ours follows as a new file, and NM uses it"

    pkg_remove_purge_with_vpn_up
    expect_eq "NetworkManager was restarted" "$nm_pid" "$(rig_nm_pid)"
    rig_install
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
    expect_cmd_ok "remove did not put the stock .name back" rig_sb cmp "$PKG_STOCK" "$RIG_IN/stock.name"
    assert_isolated work work
    pass_note "dpkg --remove: the stock .name is back, and the isolated VPN that was up stays up"

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
    expect_cmd_ok "purge did not restore the stock .name byte for byte" rig_sb cmp "$PKG_STOCK" "$RIG_IN/stock.name"
    expect_eq "purge left a diversion" "" "$(rig_sb dpkg-divert --list "$PKG_STOCK")"
    expect_sb_absent "purge left $PKG_DIVERTED" "$PKG_DIVERTED"
    for f in /usr/lib/NetworkManager/nm-vpn-netns-service /usr/libexec/nm-vpn-netns-agent /usr/bin/nm-vpn-netns \
        /usr/share/dbus-1/system.d/io.github.NmVpnNetns.Agent1.conf /run/nm-vpn-netns \
        /usr/share/polkit-1/actions/io.github.NmVpnNetns.exec.policy; do
        expect_sb_absent "purge left $f" "$f"
    done
    pass_note "after down, dpkg --purge: the stock .name byte for byte, no diversion, nothing of ours"
    pass_note "purge said: $(grep -Ev '^(Reading|Removing|Purging)' <<<"$out" | tr '\n' ';')"
    leak_watch_end
    rig_profile_nmcli stock-after-purge 1
    stock_vpn_roundtrip stock-after-purge nmcli
    rig_profile_delete stock-after-purge
}
E2E_TESTS+=(t_package)
