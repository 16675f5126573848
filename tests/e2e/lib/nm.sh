# shellcheck shell=bash
# NetworkManager in the sandbox: starting and stopping it, running in its context, OpenVPN profiles
# (nmcli or keyfile), and activation as nmcli and as GNOME's switch (libnm) do it.

# Starts NetworkManager as NetworkManager.service would: its own mount namespace that only receives
# propagation (so namespaces made later by the agent show up), /usr read-only (ProtectSystem=true),
# and the unit's capability bounding set with no inheritable capabilities.
# Extra environment for NM (e.g. NM_OPENVPN_USER=) can be passed as arguments.
rig_nm_start() {
    rig_sb env "$@" setsid unshare --mount --propagation slave -- sh -c '
        mount -o remount,bind,ro /usr || exit 1
        exec setpriv --bounding-set "$0" --inh-caps -all -- \
            NetworkManager --debug --config "$1/NetworkManager.conf"' \
        "$RIG_NM_CAPS" "$RIG_IN" </dev/null >>"$RIG_W/nm.log" 2>&1 &
    rig_wait 20 rig_sb nmcli -t -f RUNNING general || rig_die "NetworkManager did not start: $(tail -20 "$RIG_W/nm.log")"
    RIG_NM_PID=$(rig_nm_pid)
    rig_wait 10 output_matches '^uplink0:(disconnected|connected)' rig_sb nmcli -t -f DEVICE,STATE device ||
        rig_die "NetworkManager does not manage uplink0: $(rig_sb nmcli device)"
}

# NetworkManager's PID as the sandbox's main mount namespace sees it.
rig_nm_pid() { sb_pid NetworkManager; }

rig_nm_stop() {
    local pid
    pid=$(rig_nm_pid)
    [[ -n $pid ]] || return 0
    rig_sb kill "$pid"
    rig_wait 20 sb_pid_gone "$pid" || rig_sb kill -9 "$pid"
}

# Restarts NetworkManager with extra environment "$@" and brings the base connection back.
rig_nm_restart() {
    rig_nm_stop
    rig_nm_start "$@"
    [[ $(rig_state uplink) == activated ]] || rig_sb nmcli -w 20 connection up uplink >/dev/null
}

# Runs a command in NetworkManager's context: its mount namespace and its capability bounding set,
# as a plugin that NM spawned would run.
rig_nm_ctx() {
    rig_sb nsenter -t "$RIG_NM_PID" -m -- setpriv --bounding-set "$RIG_NM_CAPS" --inh-caps -all -- "$@"
}

# ---- registrations --------------------------------------------------------------------------------

# Where the stock plugin PLUGIN registers its service; the takeover moves that file to .distrib.
rig_stock_name() { echo "/usr/lib/NetworkManager/VPN/nm-$1-service.name"; }

# WHAT PLUGIN: PLUGIN's registration is taken over. Ours is the diverted stock file with program=
# alone changed, and NetworkManager's reader of the VPN directories finds it for the service, with
# our program and every other key of the stock file (vpn-registration.py).
expect_taken_over() {
    local stock
    stock=$(rig_stock_name "$2")
    expect_same "$1: our $stock differs from the diverted stock one in more than program=" \
        "$(rig_sb sed '/^program=/d' "$stock.distrib")" "$(rig_sb sed '/^program=/d' "$stock")"
    expect_cmd_ok "$1: NetworkManager's view of the $2 service is not ours" rig_sb /usr/bin/python3 \
        "$RIG_SRC_IN/tests/e2e/vpn-registration.py" "org.freedesktop.NetworkManager.$2" "$RIG_SHIM" "$stock.distrib"
    expect_line "$1: the $2 service is not registered by $stock" \
        "org.freedesktop.NetworkManager.$2: $stock" "$EXPECT_OUT"
}

# Succeeds when NM's log has line $2 after byte $1.
nm_log_since_has() {
    local since
    since=$(tail -c +"$(($1 + 1))" "$RIG_W/nm.log")
    grep -qF -- "$2" <<<"$since"
}

# PATH COMMAND...: runs the command, which removes the .name file PATH and creates it anew, and
# waits until NetworkManager has loaded the new one. NM loads a .name when it is created and never
# reloads one that exists (src/core/vpn/nm-vpn-manager.c, vpn_dir_changed): on a creation it logs
# "vpn: service file PATH created or modified" at debug level once the plugin is in its list, and
# only if the deletion before it went through. That line is the signal waited for; the VPN log
# domain is at debug only meanwhile.
rig_nm_reregister() {
    local name=$1 offset
    shift
    rig_sb nmcli general logging level KEEP domains VPN:DEBUG
    offset=$(stat -c %s "$RIG_W/nm.log")
    "$@"
    rig_wait 10 nm_log_since_has "$offset" "vpn: service file $name created or modified" ||
        expect_failed "NM did not load the new $name within 10 s" \
            "\"vpn: service file $name created or modified\" in NM's log" \
            "$(tail -c +"$((offset + 1))" "$RIG_W/nm.log" | tail -20)"
    rig_sb nmcli general logging level KEEP domains VPN:INFO
}

# WHAT PLUGIN: the stock registration of PLUGIN is back, byte for byte, with no diversion left.
expect_stock_registration() {
    local stock
    stock=$(rig_stock_name "$2")
    expect_cmd_ok "$1: the stock $stock is not back byte for byte" rig_sb cmp "$stock" "$RIG_IN/stock-$2.name"
    expect_eq "$1: a diversion of $stock is left" "" "$(rig_sb dpkg-divert --list "$stock")"
    expect_sb_absent "$1: $stock.distrib is left" "$stock.distrib"
}

# ---- profiles -------------------------------------------------------------------------------------

# vpn.data for a TLS client with certificate number $1 of the rig's PKI.
rig_vpn_data() {
    local n=$1 ca=${2:-ca}
    printf 'remote=%s, connection-type=tls, ca=%s, cert=%s, key=%s, cert-pass-flags=4, dev=tun' \
        "$RIG_SERVER_IP" "$RIG_IN/pki/$ca.crt" "$RIG_IN/pki/client$n.crt" "$RIG_IN/pki/client$n.key"
}

# Creates an OpenVPN profile with nmcli: name, client number, then extra `nmcli connection add` args.
rig_profile_nmcli() {
    local name=$1 n=$2
    shift 2
    rig_sb nmcli connection add type vpn con-name "$name" autoconnect no vpn-type openvpn \
        vpn.data "$(rig_vpn_data "$n")" "$@" >/dev/null
}

# Creates a profile the way an admin edits files: a keyfile, then `nmcli connection reload`.
# Arguments: name, client number, CA name, then extra keys: `key=value` goes to [vpn] (vpn.data or
# a vpn property), `SECTION.key=value` to [connection], [ipv4], [ipv6] or [vpn-secrets].
rig_profile_keyfile() {
    local name=$1 n=$2 ca=$3 a sec
    shift 3
    local -A extra=([connection]= [vpn]= [ipv4]= [ipv6]= [vpn-secrets]=)
    for a in "$@"; do
        sec=vpn
        case $a in connection.* | ipv4.* | ipv6.* | vpn-secrets.*) sec=${a%%.*} a=${a#*.} ;; esac
        extra[$sec]+=$a$'\n'
    done
    local file="/etc/NetworkManager/system-connections/${name//[^A-Za-z0-9_.-]/_}.nmconnection"
    {
        printf '[connection]\nid=%s\nuuid=%s\ntype=vpn\nautoconnect=false\n%s\n' \
            "$name" "$(new_uuid)" "${extra[connection]}"
        printf '[vpn]\nservice-type=org.freedesktop.NetworkManager.openvpn\n'
        printf 'remote=%s\nconnection-type=tls\nca=%s\ncert=%s\nkey=%s\ncert-pass-flags=4\ndev=tun\n%s\n' \
            "$RIG_SERVER_IP" "$RIG_IN/pki/$ca.crt" "$RIG_IN/pki/client$n.crt" "$RIG_IN/pki/client$n.key" "${extra[vpn]}"
        [[ -z ${extra[vpn-secrets]} ]] || printf '[vpn-secrets]\n%s\n' "${extra[vpn-secrets]}"
        printf '[ipv4]\nmethod=auto\n%s\n[ipv6]\nmethod=auto\n%s' "${extra[ipv4]}" "${extra[ipv6]}"
    } | rig_sb sh -c "umask 077 && cat >'$file'"
    rig_sb nmcli connection reload
}

rig_profile_delete() { rig_sb nmcli connection delete "$1" >/dev/null 2>&1 || true; }

new_uuid() { cat /proc/sys/kernel/random/uuid; }

# ---- activation -----------------------------------------------------------------------------------

rig_up_nmcli() { rig_sb nmcli -w 60 connection up "$1"; }
rig_down_nmcli() { rig_sb nmcli -w 30 connection down "$1"; }
# As gnome-shell's VPN switch does it: libnm's activate_connection_async / deactivate_connection_async.
rig_up_libnm() { rig_sb /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/libnm-switch.py" up "$1"; }
rig_down_libnm() { rig_sb /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/libnm-switch.py" down "$1"; }

rig_state() { rig_sb nmcli -g GENERAL.STATE connection show "$1" 2>/dev/null; }

# WHAT NAME: NetworkManager reports connection NAME activated.
expect_activated() {
    expect_eq "$1" activated "$(rig_state "$2")"
}
