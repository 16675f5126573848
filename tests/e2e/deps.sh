#!/usr/bin/env bash
# Installs what the build and the end-to-end rig need, idempotently, from Debian's packages.
# The real NetworkManager, NetworkManager-openvpn and openvpn are what the tests exercise, and
# NetworkManager-openconnect and openconnect against Debian's ocserv.
set -euo pipefail

PACKAGES=(
    network-manager network-manager-openvpn openvpn dbus iproute2 openssl util-linux procps
    network-manager-openconnect openconnect ocserv
    iputils-ping python3-gi gir1.2-nm-1.0 dnsmasq-base make groff-base
    # Packaging: dpkg-shlibdeps for the .deb's library dependencies, lintian, rpmbuild and rpmlint.
    dpkg-dev lintian shellcheck rpm rpmlint
    # The fault scenarios hold the agent inside a call by delaying one of its system calls.
    strace
    # `nm-vpn-netns exec` through sudo (tests-cli-exec.sh).
    sudo
    # cargo-fuzz builds libFuzzer with a C++ compiler.
    g++
    # The data-plane benchmark's throughput through the VPN (bench-load.sh).
    iperf3
)

missing=()
for p in "${PACKAGES[@]}"; do
    # Captured, not piped into grep -q, which under pipefail can fail the pipeline by SIGPIPE.
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || true
    [[ $status == *'install ok installed'* ]] || missing+=("$p")
done

if ((${#missing[@]})); then
    [[ $EUID -eq 0 ]] || { echo "deps: installing ${missing[*]} needs root" >&2; exit 1; }
    # A postinst must not start NetworkManager, udev or openvpn in the machine's own namespace,
    # where NM would take over the real interface; policy-rc.d exit 101 forbids every start.
    created_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    echo "deps: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-upgrade "${missing[@]}"
    [[ -z $created_policy ]] || rm -f /usr/sbin/policy-rc.d
fi

# ocserv's postinst enables ocserv.service (`deb-systemd-helper enable`); policy-rc.d kept it from
# starting now, but the machine would serve a VPN on its own network at its next boot. The rig runs
# its own ocserv inside rig-inet (lib/openconnect.sh); the machine's must never run. Disabled, and
# masked so that the postinst of an upgrade cannot start or enable it again.
if [[ $(systemctl is-enabled ocserv.service 2>/dev/null) != masked ]]; then
    [[ $EUID -eq 0 ]] || { echo "deps: masking ocserv.service needs root" >&2; exit 1; }
    systemctl disable --no-reload ocserv.service
    systemctl mask --no-reload ocserv.service
fi

if ! command -v cargo >/dev/null; then
    echo "deps: cargo not found. nm-vpn-netns needs Rust 1.89 or newer (Debian 12's rustc is too old);" >&2
    echo "      install a current toolchain with rustup, then run this again." >&2
    exit 1
fi

# The installed stock plugins as .debs, which the package scenario reinstalls, upgrades and installs
# again under ours. Cached outside the clone, keyed by their versions.
cache=${CI_CACHE:-/var/cache/nm-vpn-netns-ci}/debs
for stock in network-manager-openvpn network-manager-openconnect; do
    version=$(dpkg-query -W -f='${Version}' "$stock")
    if ! compgen -G "$cache/${stock}_${version//:/%3a}_*.deb" >/dev/null; then
        [[ $EUID -eq 0 ]] || { echo "deps: fetching $stock's .deb needs root" >&2; exit 1; }
        mkdir -p "$cache"
        (cd "$cache" && apt-get download -q "$stock=$version")
    fi
done
