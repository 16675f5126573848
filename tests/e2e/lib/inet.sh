# shellcheck shell=bash
# The rig's "internet": its PKI, and in namespace rig-inet the OpenVPN server and the VPN's DNS
# server (dnsmasq on the server's tunnel address). Both are children of the caller, which reaps them.
# The openconnect server beside them is in openconnect.sh.

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
    for ((i = 1; i <= RIG_CLIENTS; i++)); do
        rig_cert "client$i" "rig-client$i" ca "extendedKeyUsage=clientAuth"
    done
    chmod 644 "$d"/*
}

# N [M]: the client-config-dir entry of client N: tunnel addresses 198.19.0.(200+M) and
# fd00:198:19::(200+M), M being N unless given.
rig_client_addr() {
    local n=${2:-$1}
    printf 'ifconfig-push 198.19.0.%s 255.255.255.0\nifconfig-ipv6-push fd00:198:19::%s/64 %s\n' \
        "$((200 + n))" "$((200 + n))" "$RIG_TUN_SERVER_IP6"
}

rig_inet_up() {
    ip netns add "$RIG_NMNS"
    rig_inet_serve "$RIG_NMNS"
    rig_ocserv_serve
}

# The server side alone, with the client's end of the veth (uplink0) in namespace $1 (a name, or a
# PID whose namespace it is): the booted-system rig (tests/vm) passes 1, its own root namespace.
rig_inet_serve() {
    ip netns add "$RIG_INET"
    ip -n "$RIG_INET" link add srv0 type veth peer name uplink0 netns "$1"
    ip -n "$RIG_INET" link set lo up
    ip -n "$RIG_INET" addr add "$RIG_SERVER_IP/30" dev srv0
    ip -n "$RIG_INET" link set srv0 up
    # Negative control: tunnel addresses must be unreachable over the underlay, or a ping test
    # would pass with no tunnel at all. `local` moves below the prohibit rule. 198.19.0.0/16 holds
    # both servers' tunnels and what lies behind them (rig.sh).
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
    # Each client certificate gets a fixed tunnel address, as on a server with static addresses, and
    # the pool goes unused. The pool forgets its clients when the server restarts, and may then give
    # a client another address, which the client's openvpn, no longer root, cannot apply (see
    # t_fault_server_restart and t_fault_server_new_address).
    mkdir -p "$RIG_W/ccd"
    local i
    for ((i = 1; i <= RIG_CLIENTS; i++)); do
        rig_client_addr "$i" >"$RIG_W/ccd/rig-client$i"
    done
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
client-config-dir $RIG_W/ccd
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
    ip netns exec "$RIG_INET" "$RIG_SERVER_OPENVPN" --config "$RIG_W/server.conf" --log "$RIG_W/server.log" </dev/null &
    RIG_SERVER_PID=$!
    rig_wait 10 grep -q 'Initialization Sequence Completed' "$RIG_W/server.log" ||
        rig_die "the OpenVPN server did not start: $(tail -5 "$RIG_W/server.log")"
    rig_log "OpenVPN server up in $RIG_INET (pid $RIG_SERVER_PID)"
    rig_inet_dns RIG_DNS_PID "$RIG_TUN_SERVER_IP" "$RIG_DNS_NAME" "$RIG_W/dnsmasq.log"
}

# VAR ADDRESS NAME LOG: a VPN's DNS server in rig-inet, dnsmasq on ADDRESS, which alone knows NAME
# (as ADDRESS); like the servers, a child of ours, its PID in VAR.
rig_inet_dns() {
    ip netns exec "$RIG_INET" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --bind-interfaces \
        --listen-address="$2" --address="/$3/$2" --pid-file= --log-facility="$4" </dev/null &
    printf -v "$1" %s "$!"
    rig_wait 10 output_matches "$2:53" rig_inet ss -Hlun || rig_die "dnsmasq on $2 did not start: $(cat "$4")"
}
