# shellcheck shell=bash
# The sandbox namespaces: making them (rig_up), running commands in them, tearing them down.

# Runs a command in the sandbox's main mount namespace, where a user's shell would be.
rig_sb() {
    nsenter -t "$RIG_SB_PID" -m -n -u -p --wd=/ -- env HOME="$RIG_IN/home" "$@"
}

# Runs a command in network namespace $1 as a user would: `ip netns exec` from the sandbox.
rig_ns() {
    local ns=$1
    shift
    rig_sb ip netns exec "$ns" "$@"
}

rig_inet() { ip netns exec "$RIG_INET" "$@"; }

# Must be called inside a private mount namespace (run.sh and demo.sh re-exec under unshare).
rig_up() {
    local src=$1
    RIG_SRC=$src
    [[ $(findmnt -n -o TARGET /run 2>/dev/null) == /run ]] || mount -t tmpfs -o mode=755 rig-run /run
    # RIG_TAG (run.sh sets it) lets the caller find anything of this run still running afterwards.
    RIG_W=$(mktemp -d "/tmp/nm-vpn-netns-rig.${RIG_TAG:-$$}.XXXXXX")
    chmod 755 "$RIG_W"
    mkdir -p "$RIG_W/home" "$RIG_W/pki"
    rig_log "work dir $RIG_W"
    rig_pki
    rig_inet_up
    rig_sandbox_up
}

rig_sandbox_up() {
    cat >"$RIG_W/NetworkManager.conf" <<'CONF'
[main]
plugins=keyfile
no-auto-default=*
auth-polkit=false
hostname-mode=none
dns=default
rc-manager=file

[connectivity]
enabled=false

[logging]
level=INFO
CONF
    # Opened for appending: every process of the sandbox shares this one open file, and a scenario
    # that starts an agent of its own appends to the same file through another (t_secrets). Without
    # O_APPEND the shared offset would lag behind those lines and the sandbox's later lines would
    # overwrite them, below the end where the leak monitor reads.
    : >"$RIG_W/sandbox.log"
    setsid ip netns exec "$RIG_NMNS" unshare --mount --propagation private --uts --pid --fork --mount-proc -- \
        bash "$RIG_SRC/tests/e2e/sandbox-init.sh" "$RIG_W" "$RIG_SRC" </dev/null >>"$RIG_W/sandbox.log" 2>&1 &
    # setsid and `ip netns exec` exec, so $! is unshare, and its only child is the sandbox's PID 1.
    # Ending that PID ends every process in the sandbox.
    RIG_UNSHARE_PID=$!
    rig_wait 10 rig_find_sb_pid || rig_die "the sandbox did not start: $(cat "$RIG_W/sandbox.log")"
    rig_wait 20 test -e "$RIG_W/sandbox.ready" || rig_die "the sandbox did not get ready: $(cat "$RIG_W/sandbox.log")"
    # What `make uninstall` must restore, byte for byte.
    local plugin
    for plugin in "${RIG_PLUGINS[@]}"; do
        cp "$(rig_stock_name "$plugin")" "$RIG_W/stock-$plugin.name"
    done
    rig_log "sandbox up (pid $RIG_SB_PID); installing nm-vpn-netns into it"
    rig_install
    rig_log "starting NetworkManager"
    rig_nm_start
    rig_sb nmcli connection add type ethernet ifname uplink0 con-name uplink autoconnect no \
        ipv4.method manual ipv4.addresses "$RIG_CLIENT_IP/30" ipv4.gateway "$RIG_SERVER_IP" \
        ipv4.dns "$RIG_SERVER_IP" ipv6.method disabled >/dev/null
    rig_sb nmcli -w 20 connection up uplink >/dev/null || rig_die "the base connection did not come up"
    # The uplink's resolver stands for the ISP's; a VPN's DNS must never join it unless un-isolated.
    rig_wait 10 rig_sb grep -q "^nameserver $RIG_SERVER_IP" /etc/resolv.conf ||
        rig_die "NetworkManager did not write the uplink's DNS to /etc/resolv.conf"
    rig_wait 10 rig_sb ping -c1 -W1 "$RIG_SERVER_IP" || rig_die "the server is not reachable over the underlay"
    rig_log "NetworkManager up; uplink0 reaches the OpenVPN server"
}

# Installs the product into the sandbox exactly as a user would (`make install` as root), into the
# sandbox's overlays of /usr, /etc and /var. The binaries come from the caller's `make build`.
rig_install() {
    rig_sb make -s -C "$RIG_SRC_IN" install >>"$RIG_W/install.log" 2>&1 ||
        rig_die "make install failed in the sandbox: $(tail -5 "$RIG_W/install.log")"
    rig_confine_agent
}

# The sandbox has no systemd: the bus's launch helper starts the agent by the activation file's Exec=,
# with every capability. On a booted system the agent has only its unit's CapabilityBoundingSet, and
# a step that needs more fails there alone (the SIGTERM to a dead plugin's openvpn, which runs as
# nm-openvpn, did, before the unit had CAP_KILL). So here the agent starts through setpriv with the
# bounding set read from the installed unit, and without new privileges, as the unit has it.
rig_confine_agent() {
    local unit=/usr/lib/systemd/system/nm-vpn-netns-agent.service
    local service=/usr/share/dbus-1/system-services/io.github.NmVpnNetns.Agent1.service caps cap set=-all
    caps=$(rig_sb sed -n 's/^CapabilityBoundingSet=//p' "$unit")
    [[ -n $caps ]] || rig_die "no CapabilityBoundingSet= in the installed $unit"
    for cap in $caps; do
        cap=${cap,,}
        set+=",+${cap#cap_}"
    done
    rig_sb sed -i "s|^Exec=|Exec=/usr/bin/setpriv --bounding-set=$set --no-new-privs -- |" "$service"
}

# procfs reports size 0 for every file, so read instead of `test -s`.
rig_find_sb_pid() {
    local children
    # The file has no trailing newline, so read reports EOF even when it read the PID.
    read -r children <"/proc/$RIG_UNSHARE_PID/task/$RIG_UNSHARE_PID/children"
    [[ -n $children ]] && RIG_SB_PID=${children%% *}
}

# Tears everything down; safe to call at any point of rig_up, and more than once.
rig_down() {
    [[ -n ${RIG_SB_PID:-} || -z ${RIG_UNSHARE_PID:-} ]] || rig_find_sb_pid
    if [[ -n ${RIG_SB_PID:-} ]] && kill -0 "$RIG_SB_PID" 2>/dev/null; then
        kill -9 "$RIG_SB_PID" 2>/dev/null
        rig_wait 10 pid_gone "$RIG_SB_PID" || rig_log "sandbox pid $RIG_SB_PID did not exit"
    fi
    [[ -z ${RIG_UNSHARE_PID:-} ]] || kill -9 "$RIG_UNSHARE_PID" 2>/dev/null
    RIG_UNSHARE_PID=
    local pid
    for pid in ${RIG_SERVER_PID:-} ${RIG_DNS_PID:-} ${RIG_OC_PID:-} ${RIG_OC_DNS_PID:-}; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    RIG_SERVER_PID= RIG_DNS_PID= RIG_OC_PID= RIG_OC_DNS_PID=
    ip netns del "$RIG_INET" 2>/dev/null
    ip netns del "$RIG_NMNS" 2>/dev/null
    RIG_SB_PID=
}

# Prints the tail of every log the rig keeps, so that a red run explains itself.
rig_dump_logs() {
    local f
    for f in "$RIG_W/nm.log" "$RIG_W/server.log" "$RIG_W/sandbox.log" "$RIG_W/dnsmasq.log" \
        "$RIG_W/ocserv.log" "$RIG_W/oc-auth.log" "$RIG_W/oc-dnsmasq.log"; do
        [[ -s $f ]] || continue
        echo "----- last 60 lines of $f"
        tail -n 60 "$f"
    done
}

# ---- namespaces and files in the sandbox, and checks on them --------------------------------------

netns_exists() { rig_sb test -e "/run/netns/$1"; }
netns_gone() { ! netns_exists "$1"; }

# WHAT NS: namespace NS exists in the sandbox's main mount namespace.
expect_netns() {
    netns_exists "$2" || expect_failed "$1" "namespace $2 in \`ip netns list\`" "$(rig_sb ip netns list 2>&1)"
}

# WHAT NS [SECS]: namespace NS is gone (within SECS seconds, when given).
expect_netns_gone() {
    local secs=${3:-0}
    netns_gone "$2" || { ((secs > 0)) && rig_wait "$secs" netns_gone "$2"; } ||
        expect_failed "$1" "no namespace $2 in \`ip netns list\`" "$(rig_sb ip netns list 2>&1)"
}

# WHAT PATH [SECS]: PATH does not exist in the sandbox (within SECS seconds, when given).
expect_sb_absent() {
    local secs=${3:-0}
    sb_absent "$2" || { ((secs > 0)) && rig_wait "$secs" sb_absent "$2"; } ||
        expect_failed "$1" "no $2" "$(rig_sb ls -ld "$2" 2>&1)"
}
sb_absent() { ! rig_sb test -e "$1"; }

# WHAT LINE FILE: file FILE of the sandbox has the line LINE.
expect_sb_file_line() {
    expect_line "$1" "$2" "$(rig_sb cat "$3" 2>&1)"
}

# ---- traffic --------------------------------------------------------------------------------------

# The probe every "traffic goes through the VPN" check uses, so the negative control is the same
# probe: one ping to the server's tunnel address, run under the command prefix "$@". A scenario of
# another VPN sets a `local RIG_PROBE_IP` to an address only that VPN reaches.
probe_ping() { "$@" ping -c1 -W1 -q "${RIG_PROBE_IP:-$RIG_TUN_SERVER_IP}"; }

# WHAT SECS PREFIX...: the probe answers within SECS seconds under PREFIX (rig_sb, rig_ns NS).
expect_ping() {
    local what=$1 secs=$2
    shift 2
    expect_within "$what" "$secs" probe_ping "$@"
}

# WHAT PREFIX...: the probe gets no answer under PREFIX.
expect_no_ping() {
    local what=$1
    shift
    expect_cmd_fails "$what" probe_ping "$@"
}
