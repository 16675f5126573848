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

say "A stock OpenVPN profile"
rig_profile_nmcli demo 1
show rig_sb nmcli connection show

say "Before the VPN: the server's tunnel address $RIG_TUN_SERVER_IP is unreachable"
show rig_sb ping -c1 -W1 "$RIG_TUN_SERVER_IP"

say "nmcli connection up demo"
show rig_up_nmcli demo
show rig_sb nmcli -f GENERAL.STATE,IP4.ADDRESS,IP4.DNS,IP4.DOMAIN connection show demo

say "Through the VPN: $RIG_TUN_SERVER_IP answers"
rig_wait 10 rig_sb ping -c1 -W1 "$RIG_TUN_SERVER_IP"
show rig_sb ping -c2 -W1 "$RIG_TUN_SERVER_IP"
ok=$?

say "nmcli connection down demo"
show rig_down_nmcli demo
rig_wait_openvpn_gone
show rig_sb ping -c1 -W1 "$RIG_TUN_SERVER_IP"

say "Tearing the rig down"
exit $ok
