#!/usr/bin/env bash
# The RPM's scriptlets and file triggers, run by rpm itself in a scratch root (`rpm --root`), around
# stand-ins of NetworkManager-openvpn and NetworkManager-openconnect that ship only their .name:
# install over what `make install` set up, the stock plugin's upgrade and reinstall, the other
# plugin's install and erase under ours, our upgrade, erase (which purges what the agent left,
# as the .deb's purge does), and the stock plugin's erase under us; and shellcheck on the scriptlets as the package holds them. Run as root by
# `make rpm-check`, after `make rpm`. Nothing is written outside the scratch root: rpm runs the
# scriptlets chrooted into it, so the root gets a shell and the tools they call, copied from this
# system. Neither systemd nor a bus runs there, so what the scriptlets do with them is not tested.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/e2e/lib/expect.sh
. tests/e2e/lib/expect.sh

STOCK=/usr/lib/NetworkManager/VPN/nm-openvpn-service.name
SHIM=/usr/lib/NetworkManager/nm-vpn-netns-service

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
ours=$(echo target/rpm/RPMS/x86_64/nm-vpn-netns-*.rpm)
[[ -f $ours ]] || fail "no RPM in target/rpm; run 'make rpm' first"

# rpmbuild -bb SPEC [DEFINES...], quietly, into $work/build; prints nothing.
build() {
    rpmbuild -bb --nodeps --quiet --define "_topdir $work/build" "$@" >/dev/null
}

# The stand-in stock plugin PLUGIN at VERSION, as $work/PLUGIN-VERSION.rpm: its .name, as Fedora's,
# with a line that tells versions apart, which is also $work/PLUGIN-VERSION.name.
stock_rpm() {
    printf '%s\n' '[VPN Connection]' "name=$1" "service=org.freedesktop.NetworkManager.$1" \
        "program=/usr/libexec/nm-$1-service" 'supports-multiple-connections=true' '' \
        '[libnm]' "plugin=libnm-vpn-plugin-$1.so" "# stand-in $2" >"$work/$1-$2.name"
    cat >"$work/stock.spec" <<EOF
Name: NetworkManager-$1
Version: $2
Release: 1
Summary: stand-in
License: GPL-2.0-or-later
BuildArch: noarch
%description
The stock plugin's .name only.
%install
install -D -m 644 $work/$1-$2.name %{buildroot}${STOCK%/*}/nm-$1-service.name
%files
${STOCK%/*}/nm-$1-service.name
EOF
    build "$work/stock.spec"
    cp "$work/build/RPMS/noarch/NetworkManager-$1-$2-1.noarch.rpm" "$work/$1-$2.rpm"
}

# The scriptlets as the package holds them, each with takeover.sh built in.
for tag in POSTIN PREUN POSTUN; do
    rpm -qp --qf "%{$tag}" "$ours" >"$work/$tag.sh"
done
rpm -qp --qf '[%{FILETRIGGERSCRIPTS}\n#END\n]' "$ours" |
    awk -v dir="$work" '/^#END$/ { n++; next } { print > (dir "/filetrigger" n ".sh") }'
shellcheck -s sh -S warning "$work"/*.sh
pass_note "shellcheck: the scriptlets"

# A shell and the tools that the scriptlets call, with the libraries they load.
mkdir -p "$root/usr/bin" "$root/dev"
ln -s usr/bin "$root/bin"
mknod "$root/dev/null" c 1 3
for tool in sh sed grep chmod cmp rm mv xargs basename tr perl; do
    path=$(readlink -f "$(command -v "$tool")")
    cp "$path" "$root/usr/bin/$tool"
    for lib in $(ldd "$path" | grep -o '/[^ ]*'); do
        mkdir -p "$root${lib%/*}"
        cp -n "$lib" "$root$lib"
    done
done
# The purge's perl loads strict.pm, at the path this perl looks for it.
strict=$(perl -e 'require strict; print $INC{"strict.pm"}')
mkdir -p "$root${strict%/*}"
cp "$strict" "$root$strict"
rpm --root "$root" --initdb

# rpm ARGS...: must succeed with no scriptlet failing.
rpm_ok() {
    local out
    out=$(rpm --root "$root" --nodeps "$@" 2>&1) || expect_failed "rpm $*" "success" "$out"
    [[ $out != *"scriptlet failed"* ]] || expect_failed "rpm $*: a scriptlet failed" "none" "$out"
}

# WHAT VERSION [PLUGIN]: ours is the moved-aside stock file of PLUGIN (openvpn) at VERSION with
# program= alone changed.
expect_registered() {
    local plugin=${3:-openvpn} stock name
    name=$root${STOCK%/*}/nm-$plugin-service.name
    stock=$(cat "$work/$plugin-$2.name")
    expect_same "$1: the moved-aside file" "$stock" "$(cat "$name.distrib")"
    expect_same "$1: our .name" "${stock/program=\/usr\/libexec\/nm-$plugin-service/program=$SHIM}" "$(cat "$name")"
    pass_note "$1: ours is registered over stock $plugin $2"
}

# The stock file of VERSION back at its path, byte for byte, and nothing of ours left.
expect_stock() {
    cmp -s "$work/openvpn-$2.name" "$root$STOCK" ||
        expect_failed "$1: the stock file is not back" "stock $2" "$(cat "$root$STOCK" 2>&1)"
    expect_eq "$1: left in the VPN directory" "nm-openvpn-service.name" "$(ls -A "$root${STOCK%/*}")"
    pass_note "$1: stock $2 is back"
}

stock_rpm openvpn 1.0
stock_rpm openvpn 2.0
stock_rpm openconnect 1.0
sed 's/^Version: .*/Version: 9.9.9/' packaging/rpm/nm-vpn-netns.spec >"$work/next.spec"
build --define "srcroot $PWD" "$work/next.spec"
next=$(echo "$work"/build/RPMS/x86_64/nm-vpn-netns-9.9.9-*.rpm)

rpm_ok -i "$work/openvpn-1.0.rpm"
# What `make install` leaves on a system without dpkg, which the package takes over as it is. Only
# the openvpn plugin is installed; make install skips openconnect's and says so.
NM_VPN_NETNS_DIVERT_BY=rename NM_VPN_NETNS_VPN_DIR=$root${STOCK%/*} NM_VPN_NETNS_SHIM=$SHIM \
    sh -ec '. packaging/takeover.sh; nm_vpn_netns_for_each nm_vpn_netns_take_over' >/dev/null 2>&1
expect_registered "make install" 1.0
rpm_ok -i "$ours"
expect_registered "install over make install" 1.0
[[ -x $root$SHIM ]] || fail "install: $SHIM is missing"

rpm_ok -U "$work/openvpn-2.0.rpm"
expect_registered "the stock plugin's upgrade" 2.0

rpm_ok --reinstall "$work/openvpn-2.0.rpm"
expect_registered "the stock plugin's reinstall" 2.0

rpm_ok -i "$work/openconnect-1.0.rpm"
expect_registered "the other stock plugin installed after ours" 1.0 openconnect
rpm_ok -e NetworkManager-openconnect
expect_eq "the other stock plugin's erase under ours: left in the VPN directory" \
    "nm-openvpn-service.name nm-openvpn-service.name.distrib" "$(ls -A "$root${STOCK%/*}" | xargs)"
pass_note "the other stock plugin's erase under ours: its file and ours for it are gone"

hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
ADMIN="nameserver 192.0.2.53
" OURS="nameserver 10.8.0.1
"
# DIR NAME LEASED ETC_DIR_CREATED BACKUP|null: the agent's record of namespace NAME in DIR (/run or
# /var/lib) of the scratch root; it wrote /etc/netns/NAME/resolv.conf as $OURS, over BACKUP (null:
# it created the file), and the file holds that now.
plant_record() {
    local backup=null
    [[ $5 == null ]] || backup="\"$(hex "$5")\""
    mkdir -p "$root/$1/nm-vpn-netns" "$root/etc/netns/$2"
    printf '%s' "$OURS" >"$root/etc/netns/$2/resolv.conf"
    printf '{"netns": "%s", "leased": %s, "created": false, "files": [{"file": "resolv.conf", "backup_hex": %s, "written_hex": "%s"}], "etc_dir_created": %s}\n' \
        "$2" "$3" "$backup" "$(hex "$OURS")" "$4" >"$root/$1/nm-vpn-netns/$2"
}
# What the agent left: an entry it made (with the record's durable twin), a file it replaced in a
# namespace kept over a reboot (only the durable record is left); and the administrator's own entry.
plant_record run made false true null
plant_record var/lib made false true null
plant_record var/lib kept false false "$ADMIN"
mkdir -p "$root/etc/netns/admin"
printf '%s' "$ADMIN" >"$root/etc/netns/admin/resolv.conf"

rpm_ok -U "$next"
expect_registered "our upgrade" 2.0
expect_eq "our upgrade: the agent's records" "made" "$(ls "$root/run/nm-vpn-netns" | xargs)"
expect_eq "our upgrade: the agent's durable records" "kept made" "$(ls "$root/var/lib/nm-vpn-netns" | xargs)"
pass_note "our upgrade purges nothing"

rpm_ok -e nm-vpn-netns
expect_stock "erase" 2.0
[[ ! -e $root$SHIM ]] || fail "erase: $SHIM is left"
expect_cmd_fails "erase left the agent's state" test -e "$root/run/nm-vpn-netns"
expect_cmd_fails "erase left the agent's durable state" test -e "$root/var/lib/nm-vpn-netns"
expect_eq "erase: left in /etc/netns" "admin kept" "$(ls "$root/etc/netns" | xargs)"
expect_eq "erase: the replaced file" "$ADMIN" "$(cat "$root/etc/netns/kept/resolv.conf")
"
expect_eq "erase: the administrator's file" "$ADMIN" "$(cat "$root/etc/netns/admin/resolv.conf")
"
pass_note "erase purges: the agent's state and entry go, what it replaced is restored, the administrator's stays"

rpm_ok -i "$ours"
expect_registered "install again" 2.0
rpm_ok -e NetworkManager-openvpn
expect_eq "the stock plugin's erase: left in the VPN directory" "" "$(ls -A "$root${STOCK%/*}")"
plant_record run up true true null
rpm_ok -e nm-vpn-netns
expect_eq "erase with a VPN up: the agent's record" "up" "$(ls "$root/run/nm-vpn-netns")"
expect_eq "erase with a VPN up: its file" "$OURS" "$(cat "$root/etc/netns/up/resolv.conf")
"
pass_note "erase with an isolated VPN up keeps the state, for the agent that still runs"
expect_eq "erase after the stock plugin's: left in the VPN directory" "" "$(ls -A "$root${STOCK%/*}")"
pass_note "the stock plugin's erase leaves nothing behind, and neither does ours after it"
