#!/usr/bin/env bash
# The README's first command: bring a VPN up on the built-in rig, show where it can be reached from
# and where not, and tear everything down. Runs entirely inside namespaces it creates (see rig.sh).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)

if [[ ${RIG_INSIDE:-} != 1 ]]; then
    [[ $EUID -eq 0 ]] || { echo "demo: run as root (the rig creates namespaces)" >&2; exit 2; }
    RIG_INSIDE=1 exec unshare --net --mount --propagation private -- bash "$0" "$@"
fi

# shellcheck source=rig.sh
source "$here/rig.sh"
trap 'set +e; rig_down; [[ -z ${RIG_W:-} ]] || rm -rf "$RIG_W"' EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() { printf '$ %s\n' "$*"; "$@" 2>&1 | sed 's/^/  /'; }

say "Starting the rig: NetworkManager in a sandbox, an OpenVPN server on its 'internet'"
set -e
rig_up "$src"
set +e

say "An OpenVPN profile with one extra line: netns-isolate=yes (namespace 'work')"
rig_profile_nmcli work 1 +vpn.data netns-isolate=yes +vpn.data netns-name=work
show rig_sb nmcli -g vpn.data connection show work

say "Before the VPN: the server's tunnel address $RIG_TUN_SERVER_IP is unreachable"
show rig_sb ping -c1 -W1 "$RIG_TUN_SERVER_IP"

say "nmcli connection up work"
show rig_up_nmcli work
show rig_sb nmcli -f GENERAL.STATE connection show work
show rig_sb ip netns list

say "Inside namespace work (ip netns exec work ...): the VPN is the way out"
rig_wait 10 rig_ns work ping -c1 -W1 "$RIG_TUN_SERVER_IP"
show rig_ns work ip -br addr
show rig_ns work ip route
show rig_ns work ping -c2 -W1 "$RIG_TUN_SERVER_IP"
ok=$?
show rig_ns work cat /etc/resolv.conf
show rig_ns work getent hosts "$RIG_DNS_NAME" || ok=1

say "Everywhere else (the root namespace): no tun, no VPN route, no VPN DNS"
show rig_sb ip -br addr
show rig_sb ip route
show rig_sb cat /etc/resolv.conf
show rig_sb ping -c1 -W1 "$RIG_TUN_SERVER_IP"
show rig_sb getent hosts "$RIG_DNS_NAME"

say "nmcli connection down work: the namespace and its DNS files go away"
show rig_down_nmcli work
rig_wait_vpn_gone
rig_wait 10 netns_gone work
show rig_sb ip netns list

say "Tearing the rig down"
exit $ok
