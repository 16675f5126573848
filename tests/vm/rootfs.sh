#!/usr/bin/env bash
# Builds, or finds in the cache, the root filesystem tree of one Debian suite for the booted-system
# rig, and prints its path.
#
#   tests/vm/rootfs.sh SUITE        (as root; SUITE is bookworm or trixie)
#
# The tree is a plain `debootstrap --variant=minbase` from Debian's registry with what a desktop's
# NetworkManager VPN needs, and nothing of ours: the test adds its files to a copy of it per run.
# It is cached under $NM_VPN_NETNS_CACHE/vm (default /var/cache/nm-vpn-netns-ci), outside the clone,
# keyed by suite and a hash of this script (which holds the package list). It is built under a
# temporary name and renamed when complete, so an interrupted build is never used.
set -euo pipefail

suite=${1:?usage: rootfs.sh SUITE}

# systemd as PID 1 with its own kernel; the distribution's NetworkManager and OpenVPN plugin; what
# the test runs (python3-gi and the NM typelib for the GNOME switch's libnm calls, dnsmasq-base for
# the VPN's DNS server). bookworm's polkitd fails to configure without libpam-systemd. polkitd
# is there on both suites because NetworkManager asks it whether a local user may activate a VPN
# (trixie's network-manager only recommends it); libpam-systemd gives that user a logind session.
PACKAGES=(
    systemd-sysv udev kmod linux-image-amd64 initramfs-tools libpam-systemd polkitd
    network-manager network-manager-openvpn openvpn dbus iproute2
    python3-gi gir1.2-nm-1.0 iputils-ping procps dnsmasq-base
)

cache=${NM_VPN_NETNS_CACHE:-/var/cache/nm-vpn-netns-ci}/vm
key=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
tree=$cache/$suite-$key

# The Debian archive this machine's apt uses (deb822 or one-line sources), else Debian's own.
mirror() {
    local url
    url=$(sed -nE -e 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' \
        -e 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+).*/\2/p' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -E '/debian/?$' | head -1) || true
    echo "${NM_VPN_NETNS_MIRROR:-${url:-http://deb.debian.org/debian}}"
}

mkdir -p "$cache"
# One builder at a time; a second caller waits and then finds the tree built.
exec 9>"$cache/.lock"
flock 9
if [[ ! -d $tree ]]; then
    # Whatever an interrupted or outdated build of this suite left is of no use any more.
    rm -rf "$cache/$suite-"*
    tmp=$tree.tmp.$$
    url=$(mirror)
    echo "vm: building the $suite tree from $url (a few minutes; cached in $tree)" >&2
    start=$SECONDS
    if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
        "$suite" "$tmp" "$url" >"$cache/$suite.debootstrap.log" 2>&1; then
        tail -n 30 "$cache/$suite.debootstrap.log" >&2
        [[ ! -e $tmp/debootstrap/debootstrap.log ]] || tail -n 30 "$tmp/debootstrap/debootstrap.log" >&2
        rm -rf "$tmp"
        echo "vm: debootstrap of $suite failed" >&2
        exit 1
    fi
    # The downloaded packages are of no use in the guest; the image stays smaller without them.
    rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages
    echo "nm-vpn-netns-$suite" >"$tmp/etc/hostname"
    mv "$tmp" "$tree"
    echo "vm: $suite tree built in $((SECONDS - start)) s ($(du -sh "$tree" | cut -f1))" >&2
fi
echo "$tree"
