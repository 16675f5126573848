# shellcheck shell=bash
# Snapshots of network state, and their comparison: what a scenario or a run must leave as it found.

# The network state of the namespace it runs in, only read: links, addresses, routes and rules.
# $1, when given, is a sed script applied to the links.
net_state() {
    ip -d link show | sed "${1:-}"
    ip addr show
    ip route show table all
    ip -6 route show table all
    ip rule show
    ip -6 rule show
}

# The machine's own namespace, only read: run.sh's outer part takes one before and one after a run.
machine_snapshot() {
    net_state
    ip netns list
    ls -lA /etc/netns 2>&1
    sha256sum /etc/resolv.conf
}

# The sandbox's root namespace as NetworkManager and a user see it: links, addresses, routes,
# rules, DNS and namespaces. Two snapshots must be equal once a VPN is down again. A link's
# link-netnsid is left out.
rig_snapshot() {
    rig_sb bash -c "$(declare -f net_state)"'
        net_state "s/ link-netnsid [0-9]*//"
        echo "--- resolv.conf"; cat /etc/resolv.conf
        echo "--- netns"; ip netns list; ls -A /etc/netns 2>/dev/null'
    # The agent is a long-lived service and stays.
    echo "--- processes"
    sb_names openvpn nm-openvpn-serv nm-vpn-netns-se
}

snapshot_is() { [[ $(rig_snapshot) == "$1" ]]; }

# WHAT BEFORE [SECS]: the sandbox's root namespace is as in snapshot BEFORE (within SECS seconds,
# when given); else fails with the difference.
expect_snapshot() {
    local what=$1 before=$2 secs=${3:-0}
    ((secs == 0)) || rig_wait "$secs" snapshot_is "$before" || true
    expect_same "$what" "$before" "$(rig_snapshot)"
}
