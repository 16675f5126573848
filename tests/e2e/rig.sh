# shellcheck shell=bash
# The hermetic end-to-end rig: the real NetworkManager, NetworkManager-openvpn, openvpn and dbus-daemon
# from Debian, and NetworkManager-openconnect and openconnect against Debian's ocserv, entirely inside namespaces this script creates. Sourced by run.sh and demo.sh; it
# holds the rig's settings and loads its helpers from lib/ (see ARCHITECTURE.md for the design).
#
# Shape (why each piece is there: the caller's namespaces keep every mistake off the machine;
# rig-inet stands for the internet, and its prohibit rules make "the ping answers" prove a tunnel;
# rig-nm is a whole system for NetworkManager, so that `make install`, its D-Bus service and NM's
# own sandboxing are the real ones):
#   caller      unshare --net --mount: an empty netns and a private /run, so nothing can reach the
#               machine's own namespace even by mistake
#   rig-inet    netns with the OpenVPN server on srv0 (198.18.0.1/30), tunnel 198.19.0.0/24,
#               fd00:198:19::/64; ocserv on srv0 too (port 4443), pool 198.19.16.0/24, its DNS server
#               and probe address 198.19.17.53 on lo, behind its split route 198.19.17.0/24;
#               198.19.0.0/16 and fd00:198:19::/48 are prohibited over the underlay (negative control)
#   rig-nm      netns + mount/uts/pid namespaces: the sandbox. Overlays on /etc, /usr, /var, a private
#               /run with the system bus on its standard path, read-only /sys, and NetworkManager in a
#               slave mount namespace under NetworkManager.service's capability bounding set.
#   The veth srv0 <-> uplink0 is created directly inside the two namespaces.
#
# Paths: $RIG_W on the caller's side is /run/rig/w inside the sandbox; the source tree is /run/rig/src.

RIG_NMNS=rig-nm
RIG_INET=rig-inet
RIG_SERVER_IP=198.18.0.1
RIG_CLIENT_IP=198.18.0.2
RIG_TUN_SERVER_IP=198.19.0.1
RIG_TUN_SERVER_IP6=fd00:198:19::1
RIG_DNS_DOMAIN=vpn.test
# A name only the VPN's DNS server (dnsmasq on the server's tunnel address) knows.
RIG_DNS_NAME=host.vpn.test
# The openconnect server: ocserv's port on $RIG_SERVER_IP, its address pool (one /24), the split
# route it pushes, and on an address in that route its DNS server, which alone knows RIG_OC_DNS_NAME.
# All inside 198.19.0.0/16, which the underlay prohibits (lib/inet.sh).
RIG_OC_PORT=4443
RIG_OC_POOL=198.19.16.0
RIG_OC_SPLIT=198.19.17.0
RIG_OC_DNS_IP=198.19.17.53
RIG_OC_DNS_NAME=oc.vpn.test
# The server's openvpn. tests/vm, where the server is no longer hidden in a PID namespace of its own,
# runs it under another name, so that the checks on the client's processes (by name) do not see it.
RIG_SERVER_OPENVPN=openvpn
# Client certificates client1..clientN, each with its own fixed tunnel address (rig_client_addr):
# the scale benchmark (bench-load.sh) brings 8 isolated VPNs up at once.
RIG_CLIENTS=8
RIG_VPN_USER=alice
RIG_VPN_PASSWORD=s3cret-rig
RIG_IN=/run/rig/w
RIG_SRC_IN=/run/rig/src
# The stock plugins' .debs that tests/e2e/deps.sh fetched; /var is the machine's in the sandbox too.
rig_stock_deb() { compgen -G "${CI_CACHE:-/var/cache/nm-vpn-netns-ci}/debs/network-manager-$1_*.deb" | tail -1; }
RIG_STOCK_DEB=$(rig_stock_deb openvpn)
RIG_STOCK_DEB_IN=$RIG_STOCK_DEB
RIG_OC_STOCK_DEB=$(rig_stock_deb openconnect)
# The stock plugins whose registration `make install` takes over (packaging/takeover.sh), and the
# program ours names.
RIG_PLUGINS=(openvpn openconnect)
RIG_SHIM=/usr/lib/NetworkManager/nm-vpn-netns-service
# NetworkManager.service's CapabilityBoundingSet, which every plugin NM spawns inherits.
RIG_NM_CAPS=-all,+net_admin,+dac_override,+net_raw,+net_bind_service,+setgid,+setuid,+sys_module,+audit_write,+kill,+sys_chroot
RIG_NM_CAPBND=00000000200534e2

# The helpers, by responsibility. Each file only defines functions.
#   common.sh    rig_log, rig_die, rig_wait
#   expect.sh    the scenarios' checks: expect_eq, expect_match, expect_cmd_ok, ... and fail
#   proc.sh      processes: the sandbox's by name, the rig's own by argument
#   snapshot.sh  snapshots of the machine and of the sandbox's root namespace, and their diff
#   sandbox.sh   making and tearing down the sandbox namespaces; rig_sb, rig_ns; traffic probes
#   inet.sh      the PKI, the OpenVPN server and the VPN's DNS server in rig-inet
#   openconnect.sh  ocserv and its DNS server in rig-inet; openconnect profiles with a fresh cookie
#   nm.sh        NetworkManager, profiles and activation
#   agent.sh     the agent, called over the sandbox's bus by tests/e2e/agent-client.py
#   leak.sh      the leak monitor (tests/e2e/leak-monitor.py) run.sh wraps each isolated scenario in
#   cli.sh       the nm-vpn-netns command's output: JSON paths, exit statuses
RIG_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")/lib" && pwd)
# shellcheck source=lib/common.sh
source "$RIG_LIB/common.sh"
# shellcheck source=lib/expect.sh
source "$RIG_LIB/expect.sh"
# shellcheck source=lib/proc.sh
source "$RIG_LIB/proc.sh"
# shellcheck source=lib/snapshot.sh
source "$RIG_LIB/snapshot.sh"
# shellcheck source=lib/sandbox.sh
source "$RIG_LIB/sandbox.sh"
# shellcheck source=lib/inet.sh
source "$RIG_LIB/inet.sh"
# shellcheck source=lib/openconnect.sh
source "$RIG_LIB/openconnect.sh"
# shellcheck source=lib/nm.sh
source "$RIG_LIB/nm.sh"
# shellcheck source=lib/agent.sh
source "$RIG_LIB/agent.sh"
# shellcheck source=lib/leak.sh
source "$RIG_LIB/leak.sh"
# shellcheck source=lib/cli.sh
source "$RIG_LIB/cli.sh"
