# shellcheck shell=bash
# The openconnect side of the rig: Debian's ocserv in rig-inet beside the OpenVPN server, the VPN's
# DNS server behind its split route, and openconnect profiles whose cookie the rig fetches as a
# user's auth dialog does. Both servers are children of the caller, which reaps them (rig_down).

# The banner ocserv sends at connect; NM shows it as the VPN's banner.
RIG_OC_BANNER="Welcome to the rig's ocserv"

# Users and their crypt(3) hashes for ocserv's plain auth: "user:group:hash", `*` for no group.
# `ocpasswd` would ask for the password on a terminal.
rig_ocserv_passwd() {
    printf '%s:*:%s\n' "$RIG_VPN_USER" "$(openssl passwd -6 "$RIG_VPN_PASSWORD")" >"$RIG_W/ocpasswd"
}

# ocserv on $RIG_SERVER_IP:$RIG_OC_PORT (TCP, and UDP for DTLS) in rig-inet, and its DNS server.
rig_ocserv_serve() {
    # The DNS server and the address a probe pings live on lo, behind the split route the server
    # pushes: ocserv's own tunnel address (the pool's first) exists only while a client is connected
    # (ocserv src/ip-lease.c), so nothing could listen on it beforehand. Not a dummy link: a
    # container may lack the dummy module and cannot load it.
    ip -n "$RIG_INET" addr add "$RIG_OC_DNS_IP/32" dev lo
    rig_ocserv_passwd
    # dpd = 5: openconnect takes its DPD interval from the server; a cut tunnel is then noticed in
    # ~10 s (openconnect mainloop.c:keepalive_action) instead of 3 minutes. Banning off and no limit
    # on one user's sessions: the scenarios connect the same user again and again, quickly.
    # predictable-ips: the same user gets the same address each time. `route` is a split include,
    # so NetworkManager-openconnect's helper sends never-default and this one route.
    cat >"$RIG_W/ocserv.conf" <<EOF
banner = "$RIG_OC_BANNER"
auth = "plain[passwd=$RIG_W/ocpasswd]"
listen-host = $RIG_SERVER_IP
tcp-port = $RIG_OC_PORT
udp-port = $RIG_OC_PORT
run-as-user = nobody
run-as-group = nogroup
socket-file = $RIG_W/ocserv.sock
use-occtl = true
occtl-socket-file = $RIG_W/occtl.sock
server-cert = $RIG_W/pki/server.crt
server-key = $RIG_W/pki/server.key
isolate-workers = true
max-clients = 16
max-same-clients = 0
max-ban-score = 0
rate-limit-ms = 0
keepalive = 10
dpd = 5
mobile-dpd = 5
switch-to-tcp-timeout = 25
try-mtu-discovery = false
cookie-timeout = 300
deny-roaming = false
auth-timeout = 240
device = vpns
predictable-ips = true
ipv4-network = $RIG_OC_POOL
ipv4-netmask = 255.255.255.0
dns = $RIG_OC_DNS_IP
default-domain = $RIG_DNS_DOMAIN
route = $RIG_OC_SPLIT/255.255.255.0
tls-priorities = "NORMAL:%SERVER_PRECEDENCE:%COMPAT:-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.3"
cisco-client-compat = true
dtls-legacy = true
EOF
    rig_ocserv_start
    rig_inet_dns RIG_OC_DNS_PID "$RIG_OC_DNS_IP" "$RIG_OC_DNS_NAME" "$RIG_W/oc-dnsmasq.log"
}

# Starts ocserv with the rig's config; its PID goes to RIG_OC_PID and to ocserv.pid, where the rig
# finds it (rig_oc_pid) when a scenario, which runs in a subshell, started it again.
rig_ocserv_start() {
    # In the foreground as a child of ours, like the OpenVPN server: `ip netns exec` execs it, so
    # $! is ocserv's main process, and its workers end with it (ocserv main.c, kill_on_parent_kill).
    # Debug level 2 logs each session's start and end with its session id (sec-mod "initiating
    # session", "temporarily closing session"), which t_openconnect_reconnect follows.
    ip netns exec "$RIG_INET" ocserv -f -d 2 -c "$RIG_W/ocserv.conf" </dev/null >>"$RIG_W/ocserv.log" 2>&1 &
    RIG_OC_PID=$!
    echo "$RIG_OC_PID" >"$RIG_W/ocserv.pid"
    rig_wait 10 output_matches "$RIG_SERVER_IP:$RIG_OC_PORT" rig_inet ss -Hltn ||
        rig_die "ocserv did not start: $(tail -5 "$RIG_W/ocserv.log")"
    rig_log "ocserv up in $RIG_INET (pid $RIG_OC_PID)"
}

# ocserv restarted as an admin or a crash and its supervisor would: ended by the PID the rig
# recorded, then started again with the same config. The new one has no memory of the old sessions
# (their cookies live in the old sec-mod).
rig_ocserv_restart() {
    local pid
    pid=$(rig_oc_pid)
    kill "$pid"
    rig_wait 10 pid_gone "$pid" || rig_die "ocserv (pid $pid) did not exit"
    rig_ocserv_start
}

# The PID of the running ocserv.
rig_oc_pid() { cat "$RIG_W/ocserv.pid" 2>/dev/null || echo "${RIG_OC_PID:-}"; }

# The underlay between the sandbox and rig-inet cut, as a dead line between a client and its
# server is: every packet silently lost, both ways, with no error to either side. Into rig-inet, a
# routing rule before all others blackholes what comes in on srv0; out of it, a permanent neighbour
# entry sends the client's packets to a MAC address that uplink0 drops as not its own (a blackhole
# route out would fail the server's send at once, and ocserv's worker would end on the error instead
# of on dead-peer detection). The client's link stays up, so NetworkManager sees nothing: a link down
# would take the VPN's base connection with it.
rig_underlay_cut() {
    ip -n "$RIG_INET" rule add pref 1 iif srv0 blackhole
    ip -n "$RIG_INET" neigh replace "$RIG_CLIENT_IP" lladdr 02:00:00:00:de:ad dev srv0 nud permanent
}
rig_underlay_restore() {
    ip -n "$RIG_INET" rule del pref 1 iif srv0 blackhole 2>/dev/null
    ip -n "$RIG_INET" neigh del "$RIG_CLIENT_IP" dev srv0 2>/dev/null
    true
}

# The server certificate's pin as openconnect prints it (FINGERPRINT) and takes it (--servercert):
# the SHA-256 of its SubjectPublicKeyInfo (openconnect library.c:openconnect_get_peer_cert_hash).
rig_oc_pin() {
    printf 'pin-sha256:%s' "$(openssl x509 -in "$RIG_W/pki/server.crt" -pubkey -noout |
        openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)"
}

# Logs in as the auth dialog does before each connection, from the sandbox as the rig's clients
# run: `openconnect --authenticate` prints COOKIE, HOST, CONNECT_URL and FINGERPRINT shell-quoted.
# Sets OC_COOKIE, OC_CONNECT_URL and OC_FINGERPRINT. The cookie is a credential: never printed.
rig_oc_authenticate() {
    # shellcheck disable=SC2034 # RESOLVE: the eval may set it; this rig has no DNS name to resolve
    local out COOKIE='' HOST='' CONNECT_URL='' FINGERPRINT='' RESOLVE=''
    out=$(printf '%s\n' "$RIG_VPN_PASSWORD" | rig_sb openconnect --authenticate --non-inter --protocol=anyconnect \
        --user="$RIG_VPN_USER" --passwd-on-stdin --servercert "$(rig_oc_pin)" \
        "https://$RIG_SERVER_IP:$RIG_OC_PORT/" 2>>"$RIG_W/oc-auth.log") ||
        rig_die "openconnect --authenticate failed: $(tail -5 "$RIG_W/oc-auth.log")"
    eval "$out"
    [[ -n $COOKIE && -n $CONNECT_URL && -n $FINGERPRINT ]] ||
        rig_die "openconnect --authenticate printed no cookie, URL or fingerprint (HOST='$HOST')"
    OC_COOKIE=$COOKIE OC_CONNECT_URL=$CONNECT_URL OC_FINGERPRINT=$FINGERPRINT
}

# Writes an openconnect profile as a keyfile with a fresh cookie and loads it: name, then extra
# `key=value` lines for [vpn]. The secrets are system-owned (flags 0), so `nmcli connection up`
# needs no agent, and NM-openconnect's NeedSecrets wants all three (nm-openconnect-service.c:
# real_need_secrets). A cookie serves one connection: openconnect logs out at down and ocserv
# forgets it, so call this again before each up.
rig_oc_profile() {
    local name=$1 uuid file
    shift
    rig_oc_authenticate
    uuid=$(rig_sb nmcli -g connection.uuid connection show "$name" 2>/dev/null) || uuid=$(new_uuid)
    file="/etc/NetworkManager/system-connections/${name//[^A-Za-z0-9_.-]/_}.nmconnection"
    # Through stdin, so that the cookie is on no command line.
    {
        printf '[connection]\nid=%s\nuuid=%s\ntype=vpn\nautoconnect=false\n\n' "$name" "$uuid"
        printf '[vpn]\nservice-type=org.freedesktop.NetworkManager.openconnect\nprotocol=anyconnect\n'
        printf 'gateway=%s:%s\ncookie-flags=0\ngateway-flags=0\ngwcert-flags=0\n' "$RIG_SERVER_IP" "$RIG_OC_PORT"
        [[ $# -eq 0 ]] || printf '%s\n' "$@"
        printf '\n[vpn-secrets]\ncookie=%s\ngateway=%s\ngwcert=%s\n\n' "$OC_COOKIE" "$OC_CONNECT_URL" "$OC_FINGERPRINT"
        printf '[ipv4]\nmethod=auto\n\n[ipv6]\nmethod=auto\n'
    } | rig_sb sh -c "umask 077 && cat >'$file'"
    rig_sb nmcli connection load "$file"
}

# The processes of an openconnect VPN: openconnect and the stock plugin (comm is cut to 15 characters).
OC_PROCS=(openconnect nm-openconnect-)
