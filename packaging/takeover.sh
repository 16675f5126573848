# nm-vpn-netns takes over a NetworkManager VPN service by replacing the service's `.name` file.
# Sourced, never run: by `make install`/`make uninstall`, and built into the .deb's maintainer
# scripts and the RPM's scriptlets (a package's postrm runs after its files are gone, so it cannot
# source this at run time).
# POSIX sh, as maintainer scripts are. Every function is idempotent.
#
# Why a diversion: NetworkManager reads /usr/lib/NetworkManager/VPN before /etc and the first file
# for a service wins, so ours must sit at the stock path. dpkg-divert --rename moves the stock file
# aside (to a name that does not end in .name, which NM ignores) and makes every later upgrade of
# the stock package land there too.
#
# Why remove and create anew: NetworkManager loads a .name file when it appears in the directory and
# never reloads one that exists (its directory monitor acts on creation and deletion only), so a
# file rewritten in place would keep NM on the old content until it restarts.

# The stock VPN plugins taken over: one word each, the `nm-<word>-service.name` they ship.
NM_VPN_NETNS_PLUGINS="openvpn"

: "${NM_VPN_NETNS_VPN_DIR:=/usr/lib/NetworkManager/VPN}"
: "${NM_VPN_NETNS_SHIM:=/usr/lib/NetworkManager/nm-vpn-netns-service}"
# `--package nm-vpn-netns` in the package's scripts; `--local` for `make install`.
: "${NM_VPN_NETNS_DIVERT_OWNER:=--package nm-vpn-netns}"
# How the stock file is moved aside: `dpkg` (a diversion) where dpkg-divert exists, else `rename`.
# The RPM's scriptlets say `rename`: Fedora can install dpkg, but dpkg does not own its files.
: "${NM_VPN_NETNS_DIVERT_BY:=$(command -v dpkg-divert >/dev/null && echo dpkg || echo rename)}"

nm_vpn_netns_stock() { echo "$NM_VPN_NETNS_VPN_DIR/nm-$1-service.name"; }
nm_vpn_netns_diverted() { echo "$NM_VPN_NETNS_VPN_DIR/nm-$1-service.name.distrib"; }

# Ours, and not the stock file: ours is the only one whose program= is the shim.
nm_vpn_netns_is_ours() {
    grep -qx "program=$NM_VPN_NETNS_SHIM" "$1" 2>/dev/null
}

# Who diverts the stock file: nothing, LOCAL (make install) or a package's name.
nm_vpn_netns_diverter() {
    dpkg-divert --listpackage "$(nm_vpn_netns_stock "$1")"
}

nm_vpn_netns_divert() {
    if [ "$NM_VPN_NETNS_DIVERT_BY" = rename ]; then
        # Without dpkg (make install on other distributions, the RPM): a plain rename. The
        # distribution's package manager then puts the stock file back on every upgrade of the
        # stock plugin (the RPM's file trigger moves it aside again).
        if [ -e "$(nm_vpn_netns_stock "$1")" ] && ! nm_vpn_netns_is_ours "$(nm_vpn_netns_stock "$1")"; then
            mv "$(nm_vpn_netns_stock "$1")" "$(nm_vpn_netns_diverted "$1")"
        fi
        return 0
    fi
    # shellcheck disable=SC2086 # the owner is two words on purpose
    dpkg-divert $NM_VPN_NETNS_DIVERT_OWNER --quiet --rename \
        --divert "$(nm_vpn_netns_diverted "$1")" --add "$(nm_vpn_netns_stock "$1")"
}

# Drops our file first, so that the stock one can move back to its place.
nm_vpn_netns_undivert() {
    nm_vpn_netns_unregister "$1"
    if [ "$NM_VPN_NETNS_DIVERT_BY" = rename ]; then
        if [ -e "$(nm_vpn_netns_diverted "$1")" ] && [ ! -e "$(nm_vpn_netns_stock "$1")" ]; then
            mv "$(nm_vpn_netns_diverted "$1")" "$(nm_vpn_netns_stock "$1")"
        fi
        return 0
    fi
    # shellcheck disable=SC2086
    dpkg-divert $NM_VPN_NETNS_DIVERT_OWNER --quiet --rename \
        --divert "$(nm_vpn_netns_diverted "$1")" --remove "$(nm_vpn_netns_stock "$1")"
}

# Writes ours from the diverted stock file: every key as the distribution ships it, but program=.
nm_vpn_netns_register() {
    stock=$(nm_vpn_netns_stock "$1")
    diverted=$(nm_vpn_netns_diverted "$1")
    if [ ! -e "$diverted" ]; then
        echo "nm-vpn-netns: $diverted is missing (is network-manager-$1 installed?); not registering for $1" >&2
        return 0
    fi
    # Not a .name until renamed into place: NM never sees a half-written file.
    new="$stock.nm-vpn-netns-new"
    sed "s|^program=.*|program=$NM_VPN_NETNS_SHIM|" "$diverted" >"$new"
    chmod 644 "$new"
    if cmp -s "$new" "$stock"; then
        rm -f "$new"
        return 0
    fi
    if [ -e "$stock" ] && ! nm_vpn_netns_is_ours "$stock"; then
        rm -f "$new"
        echo "nm-vpn-netns: $stock is not ours and was not diverted; leaving it" >&2
        return 1
    fi
    rm -f "$stock"
    mv "$new" "$stock"
    echo "nm-vpn-netns: registered for $1 ($stock)"
}

nm_vpn_netns_unregister() {
    stock=$(nm_vpn_netns_stock "$1")
    if nm_vpn_netns_is_ours "$stock"; then
        rm -f "$stock"
    fi
    rm -f "$stock.nm-vpn-netns-new"
}

# The bus daemon watches its policy directories too, but not on every system; ask it outright.
nm_vpn_netns_reload_bus() {
    if [ -S /run/dbus/system_bus_socket ] && command -v dbus-send >/dev/null; then
        dbus-send --system --type=method_call --dest=org.freedesktop.DBus / \
            org.freedesktop.DBus.ReloadConfig >/dev/null 2>&1 || true
    fi
}

# After an upgrade replaced the agent's binary. An agent that holds no lease is stopped, and D-Bus
# activation starts the new one at the next call. One that holds a lease keeps serving the VPNs that
# are up, and exits by itself after its last release (its binary is gone). The arguments are the
# command that stops a unit: deb-systemd-invoke, or systemctl.
# The agent's records, one JSON file per namespace it holds or kept, and their copies that outlive
# a reboot.
: "${NM_VPN_NETNS_STATE:=/run/nm-vpn-netns}"
: "${NM_VPN_NETNS_DURABLE:=/var/lib/nm-vpn-netns}"

# The namespaces whose isolation is up (their record holds a lease), one per line.
nm_vpn_netns_leased() {
    grep -ls '"leased": *true' "$NM_VPN_NETNS_STATE"/* | xargs -r -n1 basename
}

nm_vpn_netns_stop_idle_agent() {
    [ -d /run/systemd/system ] || return 0
    if [ -n "$(nm_vpn_netns_leased)" ]; then
        echo "nm-vpn-netns: isolated VPNs are up; the running agent stays until the last one goes down"
        return 0
    fi
    "$@" stop nm-vpn-netns-agent.service >/dev/null || true
}

nm_vpn_netns_for_each() {
    for plugin in $NM_VPN_NETNS_PLUGINS; do
        "$@" "$plugin" || return
    done
}
