# shellcheck shell=bash
# The hermetic end-to-end rig: the real NetworkManager, NetworkManager-openvpn, openvpn and dbus-daemon
# from Debian, entirely inside namespaces this script creates. Sourced by run.sh and demo.sh.
#
# Shape (see shared/E2E-NOTES.md for why each piece is there):
#   caller      unshare --net --mount: an empty netns and a private /run, so nothing can reach the
#               machine's own namespace even by mistake
#   rig-inet    netns with the OpenVPN server on srv0 (198.18.0.1/30), tunnel 198.19.0.0/24,
#               fd00:198:19::/64; tunnel addresses are prohibited over the underlay (negative control)
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
RIG_VPN_USER=alice
RIG_VPN_PASSWORD=s3cret-rig
RIG_IN=/run/rig/w
RIG_SRC_IN=/run/rig/src
# NetworkManager.service's CapabilityBoundingSet, which every plugin NM spawns inherits.
RIG_NM_CAPS=-all,+net_admin,+dac_override,+net_raw,+net_bind_service,+setgid,+setuid,+sys_module,+audit_write,+kill,+sys_chroot
RIG_NM_CAPBND=00000000200534e2

rig_log() { printf '[rig] %s\n' "$*" >&2; }
rig_die() { rig_log "ERROR: $*"; exit 1; }

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

# Polls "$@" every 0.1 s until it succeeds or $1 seconds pass; a bounded wait for a state.
rig_wait() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

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

rig_pki() {
    local d=$RIG_W/pki
    # EC P-256 keeps key generation well under a second.
    rig_cert() { # name, subject CN, CA name, extensions
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
            -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
        openssl x509 -req -in "$d/$1.csr" -CA "$d/$3.crt" -CAkey "$d/$3.key" -CAcreateserial \
            -days 2 -extfile <(printf '%s\n' "$4") -out "$d/$1.crt" 2>/dev/null
    }
    for ca in ca wrong-ca; do
        openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
            -subj "/CN=rig $ca" -keyout "$d/$ca.key" -out "$d/$ca.crt" 2>/dev/null
    done
    rig_cert server rig-server ca "extendedKeyUsage=serverAuth"
    local i
    for i in 1 2 3 4; do
        rig_cert "client$i" "rig-client$i" ca "extendedKeyUsage=clientAuth"
    done
    chmod 644 "$d"/*
}

rig_inet_up() {
    ip netns add "$RIG_INET"
    ip netns add "$RIG_NMNS"
    ip -n "$RIG_INET" link add srv0 type veth peer name uplink0 netns "$RIG_NMNS"
    ip -n "$RIG_INET" link set lo up
    ip -n "$RIG_INET" addr add "$RIG_SERVER_IP/30" dev srv0
    ip -n "$RIG_INET" link set srv0 up
    # Negative control: tunnel addresses must be unreachable over the underlay, or a ping test
    # would pass with no tunnel at all. `local` moves below the prohibit rule.
    ip -n "$RIG_INET" rule add pref 100 lookup local
    ip -n "$RIG_INET" rule del pref 0 lookup local
    ip -n "$RIG_INET" rule add pref 10 iif srv0 to 198.19.0.0/16 prohibit
    ip -n "$RIG_INET" -6 rule add pref 100 lookup local
    ip -n "$RIG_INET" -6 rule del pref 0 lookup local
    ip -n "$RIG_INET" -6 rule add pref 10 iif srv0 to fd00:198:19::/48 prohibit
    rig_inet sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0

    # Certificate-only clients send no credentials; a client that sends some must send alice's.
    cat >"$RIG_W/auth.sh" <<EOF
#!/bin/sh
{ read -r user; read -r pass; } <"\$1"
[ -z "\$user" ] && exit 0
[ "\$user" = $RIG_VPN_USER ] && [ "\$pass" = $RIG_VPN_PASSWORD ]
EOF
    chmod 755 "$RIG_W/auth.sh"
    cat >"$RIG_W/server.conf" <<EOF
mode server
tls-server
dev tun
topology subnet
proto udp4
local $RIG_SERVER_IP
port 1194
server 198.19.0.0 255.255.255.0
server-ipv6 fd00:198:19::/64
ca $RIG_W/pki/ca.crt
cert $RIG_W/pki/server.crt
key $RIG_W/pki/server.key
dh none
keepalive 2 20
push "dhcp-option DNS $RIG_TUN_SERVER_IP"
push "dhcp-option DOMAIN $RIG_DNS_DOMAIN"
persist-key
persist-tun
script-security 2
auth-user-pass-verify $RIG_W/auth.sh via-file
auth-user-pass-optional
tmp-dir $RIG_W
verb 3
status $RIG_W/server.status 1
EOF
    # A child of ours rather than a daemon, so that we reap it. Not through the rig_inet function:
    # `ip netns exec` execs the server, so $! is the server's own PID and killing it ends it.
    ip netns exec "$RIG_INET" openvpn --config "$RIG_W/server.conf" --log "$RIG_W/server.log" </dev/null &
    RIG_SERVER_PID=$!
    rig_wait 10 grep -q 'Initialization Sequence Completed' "$RIG_W/server.log" ||
        rig_die "the OpenVPN server did not start: $(tail -5 "$RIG_W/server.log")"
    rig_log "OpenVPN server up in $RIG_INET (pid $RIG_SERVER_PID)"
    ip netns exec "$RIG_INET" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$RIG_TUN_SERVER_IP" --address="/$RIG_DNS_NAME/$RIG_TUN_SERVER_IP" \
        --pid-file= --log-facility="$RIG_W/dnsmasq.log" </dev/null &
    RIG_DNS_PID=$!
    rig_wait 10 sh -c "ip netns exec $RIG_INET ss -Hlun | grep -q '$RIG_TUN_SERVER_IP:53'" ||
        rig_die "dnsmasq did not start: $(cat "$RIG_W/dnsmasq.log")"
}

rig_sandbox_up() {
    cat >"$RIG_W/NetworkManager.conf" <<'EOF'
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
EOF
    setsid ip netns exec "$RIG_NMNS" unshare --mount --propagation private --uts --pid --fork --mount-proc -- \
        bash "$RIG_SRC/tests/e2e/sandbox-init.sh" "$RIG_W" "$RIG_SRC" </dev/null >"$RIG_W/sandbox.log" 2>&1 &
    # setsid and `ip netns exec` exec, so $! is unshare, and its only child is the sandbox's PID 1.
    # Ending that PID ends every process in the sandbox.
    RIG_UNSHARE_PID=$!
    rig_wait 10 rig_find_sb_pid || rig_die "the sandbox did not start: $(cat "$RIG_W/sandbox.log")"
    rig_wait 20 test -e "$RIG_W/sandbox.ready" || rig_die "the sandbox did not get ready: $(cat "$RIG_W/sandbox.log")"
    # What `make uninstall` must restore, byte for byte.
    cp /usr/lib/NetworkManager/VPN/nm-openvpn-service.name "$RIG_W/stock.name"
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
}

# Runs a command in NetworkManager's context: its mount namespace and its capability bounding set,
# as a plugin that NM spawned would run.
rig_nm_ctx() {
    rig_sb nsenter -t "$RIG_NM_PID" -m -- setpriv --bounding-set "$RIG_NM_CAPS" --inh-caps -all -- "$@"
}

# procfs reports size 0 for every file, so read instead of `test -s`.
rig_find_sb_pid() {
    local children
    # The file has no trailing newline, so read reports EOF even when it read the PID.
    read -r children <"/proc/$RIG_UNSHARE_PID/task/$RIG_UNSHARE_PID/children"
    [[ -n $children ]] && RIG_SB_PID=${children%% *}
}

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
    rig_wait 10 rig_sb sh -c 'nmcli -t -f DEVICE,STATE device | grep -q "^uplink0:\(disconnected\|connected\)"' ||
        rig_die "NetworkManager does not manage uplink0: $(rig_sb nmcli device)"
}

# NetworkManager's PID as the sandbox's main mount namespace sees it.
rig_nm_pid() {
    rig_sb sh -c 'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = NetworkManager ] && echo ${p#/proc/}; done; true' | head -1
}

rig_nm_stop() {
    local pid
    pid=$(rig_nm_pid)
    [[ -n $pid ]] || return 0
    rig_sb kill "$pid"
    rig_wait 20 sh -c "! nsenter -t $RIG_SB_PID -p -m -- kill -0 $pid" || rig_sb kill -9 "$pid"
}

# Restarts NetworkManager with extra environment "$@" and brings the base connection back.
rig_nm_restart() {
    rig_nm_stop
    rig_nm_start "$@"
    [[ $(rig_state uplink) == activated ]] || rig_sb nmcli -w 20 connection up uplink >/dev/null
}

# Tears everything down; safe to call at any point of rig_up, and more than once.
rig_down() {
    [[ -n ${RIG_SB_PID:-} || -z ${RIG_UNSHARE_PID:-} ]] || rig_find_sb_pid
    if [[ -n ${RIG_SB_PID:-} ]] && kill -0 "$RIG_SB_PID" 2>/dev/null; then
        kill -9 "$RIG_SB_PID" 2>/dev/null
        rig_wait 10 sh -c "! kill -0 $RIG_SB_PID" || rig_log "sandbox pid $RIG_SB_PID did not exit"
    fi
    [[ -z ${RIG_UNSHARE_PID:-} ]] || kill -9 "$RIG_UNSHARE_PID" 2>/dev/null
    RIG_UNSHARE_PID=
    local pid
    for pid in ${RIG_SERVER_PID:-} ${RIG_DNS_PID:-}; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    RIG_SERVER_PID= RIG_DNS_PID=
    ip netns del "$RIG_INET" 2>/dev/null
    ip netns del "$RIG_NMNS" 2>/dev/null
    RIG_SB_PID=
}

# Prints the tail of every log the rig keeps, so that a red run explains itself.
rig_dump_logs() {
    local f
    for f in "$RIG_W/nm.log" "$RIG_W/server.log" "$RIG_W/sandbox.log" "$RIG_W/dnsmasq.log"; do
        [[ -s $f ]] || continue
        echo "----- last 60 lines of $f"
        tail -n 60 "$f"
    done
}

# The sandbox's root namespace as NetworkManager and a user see it: links, addresses, routes,
# rules, DNS and namespaces. Two snapshots must be equal once a VPN is down again.
rig_snapshot() {
    rig_sb sh -c '
        ip -d link show | sed "s/ link-netnsid [0-9]*//"
        ip addr show
        ip route show table all
        ip -6 route show table all
        ip rule show
        ip -6 rule show
        echo "--- resolv.conf"; cat /etc/resolv.conf
        echo "--- netns"; ip netns list; ls -A /etc/netns 2>/dev/null
        # comm is cut to 15 characters; the agent is a long-lived service and stays.
        echo "--- processes"; for p in /proc/[0-9]*; do cat $p/comm; done 2>/dev/null |
            grep -x -e openvpn -e nm-openvpn-serv -e nm-vpn-netns-se | sort
    '
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
            "$name" "$(cat /proc/sys/kernel/random/uuid)" "${extra[connection]}"
        printf '[vpn]\nservice-type=org.freedesktop.NetworkManager.openvpn\n'
        printf 'remote=%s\nconnection-type=tls\nca=%s\ncert=%s\nkey=%s\ncert-pass-flags=4\ndev=tun\n%s\n' \
            "$RIG_SERVER_IP" "$RIG_IN/pki/$ca.crt" "$RIG_IN/pki/client$n.crt" "$RIG_IN/pki/client$n.key" "${extra[vpn]}"
        [[ -z ${extra[vpn-secrets]} ]] || printf '[vpn-secrets]\n%s\n' "${extra[vpn-secrets]}"
        printf '[ipv4]\nmethod=auto\n%s\n[ipv6]\nmethod=auto\n%s' "${extra[ipv4]}" "${extra[ipv6]}"
    } | rig_sb sh -c "umask 077 && cat >'$file'"
    rig_sb nmcli connection reload
}

rig_profile_delete() { rig_sb nmcli connection delete "$1" >/dev/null 2>&1 || true; }

# ---- activation -----------------------------------------------------------------------------------

rig_up_nmcli() { rig_sb nmcli -w 60 connection up "$1"; }
rig_down_nmcli() { rig_sb nmcli -w 30 connection down "$1"; }
# As gnome-shell's VPN switch does it: libnm's activate_connection_async / deactivate_connection_async.
rig_up_libnm() { rig_sb /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/libnm-switch.py" up "$1"; }
rig_down_libnm() { rig_sb /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/libnm-switch.py" down "$1"; }

rig_state() { rig_sb nmcli -g GENERAL.STATE connection show "$1" 2>/dev/null; }

# Waits until no openvpn client runs in the sandbox: it exits 1-2 s after `down`
# because of explicit-exit-notify.
rig_wait_openvpn_gone() {
    rig_wait 15 sh -c "! nsenter -t $RIG_SB_PID -p -m -- sh -c 'cat /proc/[0-9]*/comm 2>/dev/null | grep -qx openvpn'"
}
