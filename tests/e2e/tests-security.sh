# shellcheck shell=bash
# Security scenarios: the leak monitor catches what it is there for (its own negative control), a
# local user's profile cannot reach what is not theirs, and a VPN password reaches no log.

# ---- the leak monitor's own test ------------------------------------------------------------------

LEAK_PROBE_DIR=
# WHAT PLANT [MONITOR ARGS...]: runs function PLANT under a monitor of its own, and puts the monitor's
# exit code in LEAK_PROBE_RC and its report in LEAK_PROBE_REPORT.
leak_probe() {
    local what=$1 plant=$2
    shift 2
    LEAK_PROBE_DIR=$RIG_W/leak/probe
    leak_monitor_start "$LEAK_PROBE_DIR" "$@"
    [[ -e $LEAK_PROBE_DIR/ready ]] || expect_failed "the leak monitor did not start" "a ready monitor" "$(cat "$LEAK_PROBE_DIR/report")"
    "$plant"
    LEAK_PROBE_RC=0
    LEAK_PROBE_REPORT=$(leak_monitor_stop "$LEAK_PROBE_DIR") || LEAK_PROBE_RC=$?
    wait "$LEAK_PID" 2>/dev/null || true
    echo "    $what:"
    head -12 <<<"$LEAK_PROBE_REPORT" | sed 's/^/  /'
}

# WHAT RULE TEXT: the last probe found a leak of RULE whose line contains TEXT.
expect_leak_reported() {
    ((LEAK_PROBE_RC == 1)) || expect_failed "$1: the monitor exited $LEAK_PROBE_RC" "exit code 1 (leaks)" "$LEAK_PROBE_REPORT"
    expect_match "$1: no $2 leak reported" "LEAK $2\$" "$LEAK_PROBE_REPORT"
    expect_contains "$1: the report does not name $3" "$3" "$LEAK_PROBE_REPORT"
}

# The plants. Each changes the sandbox's root namespace (or a namespace of its own) and no more.
plant_down_tun() { rig_sb ip tuntap add dev rigleak0 mode tun; }
plant_tun_address() { rig_sb ip addr add 10.255.0.1/32 dev rigleak0; }
plant_tun_route() {
    # An IPv4 route needs its link up.
    rig_sb ip link set rigleak0 up
    rig_sb ip route add 10.254.0.0/24 dev rigleak0
}
plant_resolver() { rig_sb sh -c "echo 'nameserver $RIG_TUN_SERVER_IP' >>/etc/resolv.conf"; }
leak_agent_says() {
    echo "nm-vpn-netns-agent[1]: <INFO> isolated connection \"probe\": tun $1 is $2 in namespace $3 (new) in 1 ms" \
        >>"$RIG_W/leak/fake-agent.log"
    # The monitor reads the log every 0.1 s, and samples the namespace again 1 s after the line.
    sleep 1.5
}
plant_stayed() { leak_agent_says rigleak0 rigleak0 rigleakns; }
plant_netns_route() {
    rig_sb ip netns add rigleakns
    rig_ns rigleakns ip tuntap add dev rigleak2 mode tun
    rig_ns rigleakns ip link set rigleak2 up
    rig_ns rigleakns ip route add default dev rigleak2
    rig_ns rigleakns ip link add rigleak3 type veth peer name rigleak4
    rig_ns rigleakns ip link set rigleak3 up
    rig_ns rigleakns ip route add 10.253.0.0/24 dev rigleak3
    leak_agent_says rigleak9 rigleak2 rigleakns
}
plant_silent_move() { rig_sb ip link set rigleak0 netns rigleakns; }

# The monitor catches each kind of leak it is there for, each planted alone, and stays quiet for a
# tun that is down and bare; then everything planted is gone again.
t_leak_monitor_catches() {
    local before fake=(--agent-log "$RIG_IN/leak/fake-agent.log")
    before=$(rig_snapshot)
    mkdir -p "$RIG_W/leak"
    rig_sb cp /etc/resolv.conf "$RIG_IN/leak/resolv.conf"
    : >"$RIG_W/leak/fake-agent.log"

    leak_probe "a tun created down, with no address (expected before a move)" plant_down_tun
    ((LEAK_PROBE_RC == 0)) || expect_failed "the monitor flagged a bare tun that is down" "exit code 0" "$LEAK_PROBE_REPORT"
    expect_contains "the monitor did not say it saw no leak" "no leak" "$LEAK_PROBE_REPORT"
    pass_note "a tun that is down and has no address is not a leak"

    leak_probe "an address on the tun" plant_tun_address
    expect_leak_reported "an address on a tun" tun-address "10.255.0.1/32 on rigleak0"
    rig_sb ip addr del 10.255.0.1/32 dev rigleak0
    pass_note "an address on a tun in the root namespace is reported"

    leak_probe "a route through the tun" plant_tun_route
    expect_leak_reported "a route through a tun" tun-route "10.254.0.0/24 dev rigleak0"
    expect_leak_reported "a tun up" tun-up "rigleak0"
    rig_sb ip route del 10.254.0.0/24 dev rigleak0
    rig_sb ip link set rigleak0 down
    pass_note "a route through a tun, and the tun up, are reported"

    leak_probe "a VPN DNS server in /etc/resolv.conf" plant_resolver
    # In place, as NetworkManager's rc-manager=file writes it.
    rig_sb sh -c "cat $RIG_IN/leak/resolv.conf >/etc/resolv.conf"
    expect_leak_reported "a VPN DNS server in the resolver file" resolver "/etc/resolv.conf: nameserver $RIG_TUN_SERVER_IP"
    pass_note "a VPN DNS server in /etc/resolv.conf is reported"

    leak_probe "the agent reports rigleak0 isolated, but it is still here" plant_stayed "${fake[@]}"
    expect_leak_reported "a tun left behind" tun-stayed "rigleak0"
    pass_note "a tun still in the root namespace after the agent's isolation line is reported"

    leak_probe "a route in the isolated namespace through another link" plant_netns_route "${fake[@]}"
    expect_leak_reported "a route around the tun" netns-route '"dev": "rigleak3"'
    expect_not_contains "the route through the tun was reported" '"dev": "rigleak2"' "$LEAK_PROBE_REPORT"
    pass_note "a route inside the namespace that leaves through another link is reported; the tun's is not"

    leak_probe "a tun moved out with no line from the agent" plant_silent_move "${fake[@]}"
    expect_leak_reported "a move the agent never reported" no-marker "1 tun(s) moved out"
    pass_note "a tun that leaves with no isolation line fails the monitor rather than going unchecked"

    rig_ns rigleakns ip tuntap del dev rigleak0 mode tun
    rig_ns rigleakns ip tuntap del dev rigleak2 mode tun
    rig_sb ip netns del rigleakns
    expect_cmd_ok "/etc/resolv.conf was not restored" rig_sb cmp "$RIG_IN/leak/resolv.conf" /etc/resolv.conf
    rm -rf "$RIG_W/leak/probe" "$RIG_W/leak/fake-agent.log" "$RIG_W/leak/resolv.conf"
    expect_snapshot "the monitor's test left something behind" "$before" 5
    pass_note "everything planted is gone"
}

# The test runs monitors of its own, and plants leaks on purpose.
E2E_UNISOLATED+=(t_leak_monitor_catches)
E2E_TESTS+=(t_leak_monitor_catches)

# ---- a local user's profile -----------------------------------------------------------------------
# A profile with connection.permissions=user:NAME is the local user's: the agent's policy
# (/etc/nm-vpn-netns/agent.conf) forms its namespace name as u<UID>-NAME by default, and even with
# user-namespace-names=as-given it may never use a namespace or /etc/netns entry the agent did not
# create. NetworkManager 1.42 with no logind activates such a profile for root's nmcli.

LOCAL_USER=rigu
LOCAL_POLICY=/etc/nm-vpn-netns/agent.conf
# The administrator's own: a namespace, and an /etc/netns entry with no namespace (yet).
ADMIN_NS=admin-ns
ADMIN_DNS=/etc/netns/admin-dns/resolv.conf

# What the agent keeps about namespaces, wherever it keeps it.
# The agent's records, one line each; an empty state directory made meanwhile is no record.
agent_records() { rig_sb sh -c 'for f in /run/nm-vpn-netns/* /var/lib/nm-vpn-netns/*; do [ -e "$f" ] && ls -l "$f"; done; true'; }

local_user_setup() {
    rig_sb id -u "$LOCAL_USER" >/dev/null 2>&1 ||
        rig_sb useradd --system --no-create-home --shell /usr/sbin/nologin "$LOCAL_USER"
    netns_exists "$ADMIN_NS" || rig_sb ip netns add "$ADMIN_NS"
    rig_sb mkdir -p "${ADMIN_DNS%/*}"
    printf '# the administrator'"'"'s own\nnameserver 192.0.2.53\n' | rig_sb sh -c "cat >$ADMIN_DNS"
    LOCAL_ADMIN_SUM=$(rig_sb sha256sum "$ADMIN_DNS")
    # The default policy names the user's namespaces u<UID>-NAME.
    LOCAL_PREFIX=u$(rig_sb id -u "$LOCAL_USER")-
    LOCAL_RECORDS=$(agent_records)
}

# The scenarios' EXIT trap: whatever failed, no profile of the user's stays up or defined.
local_user_cleanup() {
    local name
    for name in $(rig_sb nmcli -g NAME connection show | grep '^user-'); do
        rig_sb nmcli -w 30 connection down "$name" >/dev/null 2>&1 || true
        rig_profile_delete "$name"
    done
    rig_wait_vpn_gone || true
    rig_sb rm -f "$LOCAL_POLICY"
    rig_sb ip netns del "$ADMIN_NS"
    rig_sb rm -rf "${ADMIN_DNS%/*}"
    rig_sb userdel "$LOCAL_USER" || true
}

# WHAT: the admin's namespace and file are as they were, no namespace of the user's remains, and
# the agent keeps no more records than before.
expect_admins_intact() {
    expect_eq "$1: the admin's $ADMIN_DNS changed" "$LOCAL_ADMIN_SUM" "$(rig_sb sha256sum "$ADMIN_DNS" 2>&1)"
    expect_no_match "$1: a VPN went into the admin's namespace $ADMIN_NS" ' tun ' "$(rig_sb ip -n "$ADMIN_NS" -d link show)"
    expect_netns_gone "$1: the user's namespace of $ADMIN_DNS exists" admin-dns
    expect_no_match "$1: a namespace of user $LOCAL_USER remains" "^$LOCAL_PREFIX" "$(rig_sb ip netns list)"
    expect_same "$1: the agent's records changed" "$LOCAL_RECORDS" "$(agent_records)"
}

# The default policy: the user's profile aims at the admin's namespace, then at the admin's
# /etc/netns entry, and lands in a namespace of its own each time, touching neither.
t_local_user_prefixed() {
    local name target ns
    trap local_user_cleanup EXIT
    local_user_setup
    for target in "$ADMIN_NS" admin-dns; do
        name=user-$target ns=$LOCAL_PREFIX$target
        rig_profile_keyfile "$name" 1 ca netns-isolate=yes "netns-name=$target" \
            "connection.permissions=user:$LOCAL_USER;" timeout=15
        expect_cmd_ok "the user's profile aimed at $target did not come up (in $ns)" rig_up_nmcli "$name"
        expect_netns "the user's profile aimed at $target did not get namespace $ns" "$ns"
        expect_ping "no ping from $ns" 10 rig_ns "$ns"
        expect_eq "while $name is up: the admin's $ADMIN_DNS changed" "$LOCAL_ADMIN_SUM" "$(rig_sb sha256sum "$ADMIN_DNS")"
        expect_no_match "while $name is up: the VPN is in the admin's namespace" ' tun ' "$(rig_sb ip -n "$ADMIN_NS" -d link show)"
        pass_note "netns-name=$target from user $LOCAL_USER's profile -> namespace $ns; the admin's namespace and file untouched"
        rig_down_nmcli "$name" >/dev/null
        expect_vpn_gone
        expect_netns_gone "$ns remains after down" "$ns" 10
        rig_profile_delete "$name"
        expect_admins_intact "after $name went down"
    done
    pass_note "after down: the admin's file byte for byte, no namespace of the user's, no record"
}

# user-namespace-names=as-given: each aim at what the agent did not create is refused, says so in
# NetworkManager's log, and leaves nothing behind.
t_local_user_as_given() {
    trap local_user_cleanup EXIT
    local_user_setup
    rig_sb mkdir -p "${LOCAL_POLICY%/*}"
    printf '[agent]\nuser-namespace-names=as-given\n' | rig_sb sh -c "umask 022 && cat >$LOCAL_POLICY"
    refused user-foreign-ns 'did not create' netns-isolate=yes "netns-name=$ADMIN_NS" "connection.permissions=user:$LOCAL_USER;"
    expect_admins_intact "after the refusal of $ADMIN_NS"
    refused user-admin-dns 'did not create' netns-isolate=yes netns-name=admin-dns "connection.permissions=user:$LOCAL_USER;"
    expect_admins_intact "after the refusal of admin-dns"
    pass_note "as-given: the admin's namespace and /etc/netns entry are refused to a user; nothing changed"
}

# Path-like names never reach the file system, whoever's the profile.
t_local_user_path_names() {
    trap local_user_cleanup EXIT
    local_user_setup
    local name
    for name in ../x a/b; do
        refused "user-${name//[^a-z]/_}" "invalid value \"$name\"" netns-isolate=yes "netns-name=$name" \
            "connection.permissions=user:$LOCAL_USER;"
        expect_admins_intact "after the refusal of $name"
        expect_sb_absent "netns-name=$name made /etc/netns/x" /etc/netns/x
        expect_sb_absent "netns-name=$name made /etc/x" /etc/x
    done
}

E2E_TESTS+=(t_local_user_prefixed t_local_user_as_given t_local_user_path_names)

# ---- secrets ----------------------------------------------------------------------------------------
# A password-authenticated VPN, isolated and through the shim alone, with every log at its most
# verbose: NetworkManager at TRACE in every domain, and the agent at RUST_LOG=trace.
#
# `domains ALL` leaves VPN_PLUGIN at INFO: NetworkManager warns that plugins may log secrets in it.
# So the password must be in no line at all of NetworkManager's log (its own, the plugins' and
# openvpn's) nor of the agent's; then, with VPN_PLUGIN:TRACE asked for explicitly (the plugins run
# at NM_VPN_LOG_LEVEL=7, the shim at trace), in no line of our binaries, and what the stock plugin
# writes there is reported.

agent_on_bus() { [[ -n $(agent_pid) ]]; }

# Stops the agent on the bus (none holds a lease between scenarios), waiting until it is gone.
agent_stop() {
    local pid
    pid=$(agent_pid)
    [[ -n $pid ]] || return 0
    rig_sb kill "$pid"
    expect_within "the agent (pid $pid) did not exit on SIGTERM" 10 no_agent_on_bus
}

secrets_profile() {
    local name=$1
    shift
    rig_profile_keyfile "$name" 4 ca connection-type=password-tls "username=$RIG_VPN_USER" password-flags=0 \
        "vpn-secrets.password=$RIG_VPN_PASSWORD" "$@"
}

# Brings profile $1 up and down; "$2" is the probe's prefix (rig_ns NS, or rig_sb).
secrets_roundtrip() {
    local name=$1
    shift
    expect_cmd_ok "the password VPN $name did not come up" rig_up_nmcli "$name"
    expect_ping "no ping through $name" 10 "$@"
    if [[ $1 == rig_ns ]]; then
        local found
        found=$(rig_sb grep -rlF -- "$RIG_VPN_PASSWORD" /run/nm-vpn-netns /var/lib/nm-vpn-netns "/etc/netns/$2" 2>/dev/null) || true
        [[ -z $found ]] || expect_failed "the password is in the agent's files" "no file with the password" "$found"
        pass_note "$name up: the password is in no record of the agent's and no file of /etc/netns/$2"
    fi
    # Any local user can read a process's command line.
    SECRETS_OPENVPN=$(rig_sb cat "/proc/$(sb_pid openvpn)/cmdline" | tr '\0' ' ')
    expect_not_contains "the password is on openvpn's command line" "$RIG_VPN_PASSWORD" "$SECRETS_OPENVPN"
    rig_down_nmcli "$name" >/dev/null
    expect_vpn_gone
}

# The lines of nm.log and sandbox.log (NetworkManager's, the agent's) since the line counts $1 $2.
logs_since() {
    tail -n +"$(($1 + 1))" "$RIG_W/nm.log"
    tail -n +"$(($2 + 1))" "$RIG_W/sandbox.log"
}
log_marks() { echo "$(wc -l <"$RIG_W/nm.log") $(wc -l <"$RIG_W/sandbox.log")"; }

t_secrets() {
    local logging pw=$RIG_VPN_PASSWORD marks=() lines hits ours
    logging=$(rig_sb nmcli -t -f LEVEL,DOMAINS general logging)
    # shellcheck disable=SC2064 # the levels to restore are those of now
    trap "secrets_cleanup '$logging'" EXIT
    rig_sb nmcli general logging level TRACE domains ALL
    # The agent at its most verbose, logging where the bus's would (the sandbox's log).
    agent_stop
    rig_sb env RUST_LOG=trace /usr/libexec/nm-vpn-netns-agent >>"$RIG_W/sandbox.log" 2>&1 &
    expect_within "the hand-started agent did not take its name" 10 agent_on_bus
    expect_agent_running "no agent"
    expect_contains "the agent on the bus is not the verbose one" RUST_LOG=trace \
        "$(rig_sb cat "/proc/$AGENT_PID/environ" | tr '\0' '\n')"
    secrets_profile secret-iso netns-isolate=yes netns-name=secret
    secrets_profile secret-plain

    # TRACE, domains ALL: the password in no line at all.
    read -ra marks < <(log_marks)
    secrets_roundtrip secret-iso rig_ns secret
    lines=$(logs_since "${marks[@]}")
    expect_match "the agent did not log at debug or trace" 'nm-vpn-netns-agent\[[0-9]+\]: <(TRACE|DEBUG)>' "${lines//$pw/<password>}"
    expect_match "NetworkManager did not log at trace" '^<trace>' "${lines//$pw/<password>}"
    hits=$(grep -nF -- "$pw" <<<"$lines") || true
    [[ -z $hits ]] || expect_failed "TRACE, ALL: the password is in a log" "no line with the password" "${hits//$pw/<password>}"
    pass_note "TRACE, domains ALL, isolated: the password is in none of $(wc -l <<<"$lines") log lines (NetworkManager, plugins, agent)"

    # VPN_PLUGIN:TRACE as well (NM_VPN_LOG_LEVEL=7): in no line of ours.
    rig_sb nmcli general logging level TRACE domains ALL,VPN_PLUGIN:TRACE
    read -ra marks < <(log_marks)
    secrets_roundtrip secret-iso rig_ns secret
    leak_watch_end
    secrets_roundtrip secret-plain rig_sb
    echo "    VPN_PLUGIN:TRACE: openvpn ran with $(grep -oE -- '--verb [0-9]+' <<<"$SECRETS_OPENVPN")"
    lines=$(logs_since "${marks[@]}")
    # The shim's most detailed lines are at debug.
    expect_match "the shim did not log at debug" 'nm-vpn-netns-service\[[0-9]+\]: <(TRACE|DEBUG)>' "${lines//$pw/<password>}"
    ours=$(grep -E '^nm-vpn-netns-(service|agent)\[' <<<"$lines") || true
    hits=$(grep -nF -- "$pw" <<<"$ours") || true
    [[ -z $hits ]] || expect_failed "VPN_PLUGIN:TRACE: the password is in a line of our binaries" "no line with the password" "${hits//$pw/<password>}"
    pass_note "VPN_PLUGIN:TRACE, isolated and not: the password is in none of our $(wc -l <<<"$ours") lines"
    hits=$(grep -nF -- "$pw" <<<"$lines") || true
    echo "    VPN_PLUGIN:TRACE: lines of others with the password: $(grep -c . <<<"$hits")"
    [[ -z $hits ]] || grep -B12 -F -- "$pw" <<<"$lines" | grep -E '^nm-openvpn\[|secrets' | sort -u |
        sed "s/$pw/<password>/; s/^/      /"

    # TRACE, domains ALL again, not isolated.
    rig_sb nmcli general logging level TRACE domains ALL
    read -ra marks < <(log_marks)
    secrets_roundtrip secret-plain rig_sb
    lines=$(logs_since "${marks[@]}")
    hits=$(grep -nF -- "$pw" <<<"$lines") || true
    [[ -z $hits ]] || expect_failed "TRACE, ALL, not isolated: the password is in a log" "no line with the password" "${hits//$pw/<password>}"
    pass_note "TRACE, domains ALL, not isolated: the password is in none of $(wc -l <<<"$lines") log lines"

    echo "    openvpn as NM-openvpn ran it (TRACE, ALL): $SECRETS_OPENVPN"
    case $SECRETS_OPENVPN in
    *--syslog*) echo "    openvpn logs to syslog ($(grep -oE -- '--verb [0-9]+' <<<"$SECRETS_OPENVPN")), which the rig does not have: its own lines are not seen here" ;;
    *) echo "    openvpn logs to its stderr, which NetworkManager's log holds" ;;
    esac
}

# The EXIT trap of t_secrets: NetworkManager's logging as it was ($1, LEVEL:DOMAINS), no VPN of
# its own left, and the verbose agent stopped (the bus starts a plain one on the next call).
secrets_cleanup() {
    local name
    for name in secret-iso secret-plain; do
        rig_sb nmcli -w 30 connection down "$name" >/dev/null 2>&1 || true
        rig_profile_delete "$name"
    done
    rig_wait_vpn_gone || true
    rig_sb nmcli general logging level "${1%%:*}" domains "${1#*:}"
    (agent_stop) || true
}
E2E_TESTS+=(t_secrets)
