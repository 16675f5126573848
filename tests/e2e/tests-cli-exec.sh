# shellcheck shell=bash
# `nm-vpn-netns exec` as a user meets it: through sudo, as a local user with a sudoers rule, into the
# isolated VPN `work`; and stand-ins for the host's nscd and systemd-resolved sockets, which must
# hear nothing from inside while plain `ip netns exec` reaches nscd's (the negative control).

EXEC_USER="test"
EXEC_OTHER=rigother
EXEC_GROUP=rigexec
EXEC_SUDOERS=/etc/sudoers.d/nm-vpn-netns-e2e
EXEC_NSCD=/run/nscd/socket
EXEC_RESOLVED=/run/systemd/resolve/io.systemd.Resolve
EXEC_STANDIN=/tmp/resolver-standin
# What the exec'd shell reports, one section per marker.
EXEC_PROBE='id; env; echo "ns $(readlink /proc/self/ns/net)"; echo "sys" $(ls /sys/class/net)
getent hosts '"$RIG_DNS_NAME"'
for s in '"$EXEC_NSCD $EXEC_RESOLVED"'; do
    python3 -c "import socket,sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1])" "$s" 2>/dev/null &&
        echo "reached $s" || echo "unreachable $s"
done'

# As $1, through sudo, with a session's variables and one that must never pass.
exec_as() {
    local user=$1 uid
    shift
    uid=$(rig_sb id -u "$user")
    rig_sb runuser -u "$user" -- env WAYLAND_DISPLAY=w-1 "XDG_RUNTIME_DIR=/run/user/$uid" LD_PRELOAD=x \
        DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent sudo nm-vpn-netns exec "$@"
}

# The stand-ins live in the sandbox's own /run, a tmpfs of its PID 1 (sandbox-init.sh): checked
# before anything is made there, and nothing that exists is replaced.
exec_standins_start() {
    # The caller's own tmpfs (run.sh) lies under the sandbox's: the last mount on /run is on top.
    expect_eq "the sandbox's /run is not its own tmpfs" sandbox-run "$(rig_sb findmnt -n -o SOURCE /run | tail -1)"
    expect_cmd_fails "/run/nscd exists in the sandbox" rig_sb test -e /run/nscd
    expect_cmd_fails "/run/systemd/resolve exists in the sandbox" rig_sb test -e /run/systemd/resolve
    EXEC_MADE_SYSTEMD=
    rig_sb test -e /run/systemd || EXEC_MADE_SYSTEMD=1
    EXEC_MADE_STANDINS=1
    rig_sb mkdir -p /run/nscd /run/systemd/resolve
    rig_sb rm -f "$EXEC_STANDIN".*
    rig_sb sh -c "python3 $RIG_SRC_IN/tests/e2e/resolver-standin.py $EXEC_STANDIN.log $EXEC_STANDIN.pid \
        $EXEC_STANDIN.stop $EXEC_NSCD $EXEC_RESOLVED </dev/null >$EXEC_STANDIN.err 2>&1 &"
    rig_wait 10 rig_sb test -s "$EXEC_STANDIN.pid" || fail "the resolver stand-ins did not start: $(rig_sb cat "$EXEC_STANDIN.err")"
    rig_sb touch "$EXEC_STANDIN.log"
}

standin_gone() { ! rig_sb kill -0 "$1" 2>/dev/null; }

exec_standins_stop() {
    local pid
    [[ -n ${EXEC_MADE_STANDINS:-} ]] || return 0
    pid=$(rig_sb cat "$EXEC_STANDIN.pid" 2>/dev/null) || true
    rig_sb touch "$EXEC_STANDIN.stop"
    [[ -z $pid ]] || rig_wait 5 standin_gone "$pid" || rig_sb kill "$pid" 2>/dev/null || true
    rig_sb rm -rf /run/nscd /run/systemd/resolve "$EXEC_STANDIN".*
    [[ -z ${EXEC_MADE_SYSTEMD:-} ]] || rig_sb rmdir /run/systemd
}

exec_setup() {
    rig_sb groupadd "$EXEC_GROUP"
    rig_sb useradd --no-create-home -G "$EXEC_GROUP" --shell /bin/sh "$EXEC_USER"
    rig_sb useradd --no-create-home --shell /bin/sh "$EXEC_OTHER"
    # sudo keeps a few variables only (sudoers(5) env_reset); the session's are kept for exec, and
    # LD_PRELOAD and a system bus address too (exec_as passes a dead one), so that it is exec's own
    # allow-list that keeps LD_PRELOAD from the command, and its cleared environment that keeps
    # the root part on the real bus: with the address, it would find no NetworkManager.
    printf '%s\n' \
        'Defaults!/usr/bin/nm-vpn-netns env_keep += "WAYLAND_DISPLAY XDG_RUNTIME_DIR LD_PRELOAD DBUS_SYSTEM_BUS_ADDRESS"' \
        "$EXEC_USER, $EXEC_OTHER ALL=(root) NOPASSWD: /usr/bin/nm-vpn-netns" |
        rig_sb sh -c "umask 337 && cat >$EXEC_SUDOERS"
    rig_sb visudo -c -q -f "$EXEC_SUDOERS" || fail "visudo refuses $EXEC_SUDOERS"
}

# The scenarios' EXIT trap: every step runs, whatever failed before it.
exec_cleanup() {
    set +eE
    rig_sb nmcli -w 30 connection down work >/dev/null 2>&1
    rig_sb nmcli -w 30 connection down user-other >/dev/null 2>&1
    rig_profile_delete work
    rig_profile_delete user-other
    rig_wait_vpn_gone || true
    exec_standins_stop
    rig_sb rm -f "$EXEC_SUDOERS"
    rig_sb userdel "$EXEC_USER"
    rig_sb userdel "$EXEC_OTHER"
    rig_sb groupdel "$EXEC_GROUP"
}

t_cli_exec_sudo() {
    local out uid gid ino rc
    trap exec_cleanup EXIT
    exec_setup
    rig_profile_keyfile work 1 ca netns-isolate=yes netns-name=work
    expect_cmd_ok "nmcli connection up work failed" rig_up_nmcli work
    exec_standins_start
    uid=$(rig_sb id -u "$EXEC_USER") gid=$(rig_sb getent group "$EXEC_GROUP" | cut -d: -f3)

    out=$(exec_as "$EXEC_USER" work -- sh -c "$EXEC_PROBE" 2>&1)
    expect_match "the command did not run as $EXEC_USER with group $EXEC_GROUP" \
        "^uid=$uid\($EXEC_USER\) gid=[0-9]+\($EXEC_USER\) groups=.*$gid\($EXEC_GROUP\)" "$out"
    pass_note "the command ran as $(grep '^uid=' <<<"$out")"
    expect_match "WAYLAND_DISPLAY did not pass" '^WAYLAND_DISPLAY=w-1$' "$out"
    expect_match "XDG_RUNTIME_DIR did not pass" "^XDG_RUNTIME_DIR=/run/user/$uid\$" "$out"
    expect_no_match "LD_PRELOAD passed" '^LD_PRELOAD=' "$out"
    expect_no_match "SUDO_ variables passed" '^SUDO_' "$out"
    expect_no_match "DBUS_SYSTEM_BUS_ADDRESS passed" '^DBUS_SYSTEM_BUS_ADDRESS=' "$out"
    pass_note "WAYLAND_DISPLAY and XDG_RUNTIME_DIR passed; LD_PRELOAD, SUDO_* and the dead bus address did not, and the root part used the real bus"
    ino=$(rig_sb stat -L -c %i /run/netns/work)
    expect_match "the command is not in namespace work (net:[$ino])" "^ns net:\[$ino\]\$" "$out"
    expect_no_match "the sandbox's root namespace is the same as work's" "net:\[$ino\]" "$(rig_sb readlink /proc/self/ns/net)"
    expect_match "$RIG_DNS_NAME did not resolve through the VPN's DNS" "^$RIG_TUN_SERVER_IP +$RIG_DNS_NAME" "$out"
    expect_match "/sys is not the namespace's (links: lo and the tun only)" '^sys lo tun[0-9]+$' "$out"
    pass_note "the command lives in namespace work (net:[$ino]), $(grep '^sys ' <<<"$out"), and resolves $RIG_DNS_NAME"
    expect_match "nscd's socket was reachable inside" "^unreachable $EXEC_NSCD\$" "$out"
    expect_match "resolved's socket was reachable inside" "^unreachable $EXEC_RESOLVED\$" "$out"
    expect_no_match "a stand-in heard from namespace work under exec" "net:\[$ino\]" "$(rig_sb cat "$EXEC_STANDIN.log")"
    pass_note "the nscd and resolved stand-ins heard nothing from namespace work under exec"

    # The negative control: the same through plain ip netns exec reaches both stand-ins, and
    # getent alone asks nscd's.
    out=$(rig_ns work getent hosts "$RIG_DNS_NAME" 2>&1)
    expect_match "$RIG_DNS_NAME did not resolve through ip netns exec" "^$RIG_TUN_SERVER_IP " "$out"
    expect_match "getent under ip netns exec did not ask nscd (negative control)" "^$EXEC_NSCD net:\[$ino\] uid=0\$" \
        "$(rig_sb cat "$EXEC_STANDIN.log")"
    out=$(rig_ns work sh -c "$EXEC_PROBE" 2>&1)
    expect_match "ip netns exec did not reach resolved's socket (negative control)" "^reached $EXEC_RESOLVED\$" "$out"
    pass_note "negative control: under plain ip netns exec, getent asked the nscd stand-in, and resolved's socket answered"

    rc=0
    exec_as "$EXEC_USER" work -- sh -c 'exit 7' >/dev/null 2>&1 || rc=$?
    expect_eq "the command's exit status did not pass through" 7 "$rc"
    rc=0
    out=$(exec_as "$EXEC_USER" -- /nonexistent 2>&1) || rc=$?
    expect_eq "a missing command (the one VPN up, no target) did not give 127: $out" 127 "$rc"
    pass_note "exit statuses: 7 passed through; a missing command gave 127"
}

t_cli_exec_refused() {
    local out rc uid
    trap exec_cleanup EXIT
    exec_setup
    rig_profile_keyfile work 1 ca netns-isolate=yes netns-name=work
    rc=0
    out=$(exec_as "$EXEC_USER" work -- true 2>&1) || rc=$?
    expect_eq "exec into a VPN that is down did not fail with 125: $out" 125 "$rc"
    expect_contains "exec did not say the VPN is down" 'VPN "work" is down' "$out"
    rc=0
    out=$(exec_as "$EXEC_USER" nowhere -- true 2>&1) || rc=$?
    expect_eq "exec into no VPN's namespace did not fail with 125: $out" 125 "$rc"
    expect_contains "exec did not name the unknown target" 'no isolated VPN has the id, uuid or namespace "nowhere"' "$out"
    pass_note "refused with 125: a VPN that is down, a namespace of no VPN"

    rig_profile_keyfile user-other 1 ca netns-isolate=yes "connection.permissions=user:$EXEC_OTHER;"
    expect_cmd_ok "nmcli connection up user-other failed" rig_up_nmcli user-other
    uid=$(rig_sb id -u "$EXEC_OTHER")
    rc=0
    out=$(exec_as "$EXEC_USER" user-other -- true 2>&1) || rc=$?
    expect_eq "exec into another user's VPN did not fail with 125: $out" 125 "$rc"
    expect_contains "exec did not say why" "user \"$EXEC_USER\" may not exec into u$uid-user-other" "$out"
    expect_eq "the owner could not exec into u$uid-user-other" "$uid" "$(exec_as "$EXEC_OTHER" user-other -- id -u 2>/dev/null)"
    pass_note "user-other's namespace: refused to $EXEC_USER, open to $EXEC_OTHER whom its permissions name"
}

# A host where /etc/resolv.conf points into systemd-resolved's directory, as on most desktops: exec
# hides the directory and still binds the VPN's resolv.conf where the link leads. The sandbox's
# /etc is an overlay of its own, so its resolv.conf may be swapped for the link and put back.
EXEC_RESOLV_SAVED=/tmp/exec-resolv.conf.saved

exec_resolv_restore() {
    exec_cleanup
    if rig_sb test -e "$EXEC_RESOLV_SAVED"; then
        rig_sb rm -f /etc/resolv.conf
        rig_sb mv "$EXEC_RESOLV_SAVED" /etc/resolv.conf
    fi
    [[ -z ${EXEC_MADE_RESOLVE:-} ]] || rig_sb rm -rf /run/systemd/resolve
    [[ -z ${EXEC_MADE_SYSTEMD:-} ]] || rig_sb rmdir /run/systemd
}

t_cli_exec_resolved_link() {
    local out
    trap exec_resolv_restore EXIT
    expect_eq "the sandbox's /run is not its own tmpfs" sandbox-run "$(rig_sb findmnt -n -o SOURCE /run | tail -1)"
    expect_eq "the sandbox's /etc is not its own overlay" sandbox-etc "$(rig_sb findmnt -n -o SOURCE /etc | tail -1)"
    expect_cmd_fails "/run/systemd/resolve exists in the sandbox" rig_sb test -e /run/systemd/resolve
    EXEC_MADE_SYSTEMD=
    rig_sb test -e /run/systemd || EXEC_MADE_SYSTEMD=1
    EXEC_MADE_RESOLVE=1
    rig_sb mkdir -p /run/systemd/resolve
    rig_sb cp /etc/resolv.conf /run/systemd/resolve/stub-resolv.conf
    rig_sb cp -a /etc/resolv.conf "$EXEC_RESOLV_SAVED"
    rig_sb ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
    exec_setup
    rig_profile_keyfile work 1 ca netns-isolate=yes netns-name=work
    expect_cmd_ok "nmcli connection up work failed" rig_up_nmcli work
    out=$(exec_as "$EXEC_USER" work -- sh -c "readlink /etc/resolv.conf; cat /etc/resolv.conf; \
        echo listing \$(ls -A /run/systemd/resolve); getent hosts $RIG_DNS_NAME" 2>&1)
    expect_match "/etc/resolv.conf is not the host's link" '^\.\./run/systemd/resolve/stub-resolv\.conf$' "$out"
    expect_match "the link does not lead to the VPN's resolv.conf" "^nameserver $RIG_TUN_SERVER_IP\$" "$out"
    expect_match "resolved's directory is not hidden but for the bound file" '^listing stub-resolv\.conf$' "$out"
    expect_match "$RIG_DNS_NAME did not resolve" "^$RIG_TUN_SERVER_IP +$RIG_DNS_NAME" "$out"
    pass_note "/etc/resolv.conf -> resolved's stub: the VPN's file is bound there, the rest of the directory hidden"
}

# pkexec(1) as exec meets it: a fresh environment with PKEXEC_UID, the program as root, in root's
# home. The rig has no polkit, so a stand-in on the user's PATH gets root through sudo and then does
# just that; what is tested is exec's side, the user's call and the privileged part's reading of it.
EXEC_FAKEBIN=/tmp/exec-fakebin

exec_fake_pkexec() {
    rig_sb mkdir -p "$EXEC_FAKEBIN"
    printf '#!/bin/sh\nexec sudo -n %s/pkexec-root "$@"\n' "$EXEC_FAKEBIN" |
        rig_sb sh -c "cat >$EXEC_FAKEBIN/pkexec && chmod 755 $EXEC_FAKEBIN/pkexec"
    printf '#!/bin/sh\nuid=$SUDO_UID\ncd /root || exit 127\nexec env -i PKEXEC_UID="$uid" PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"\n' |
        rig_sb sh -c "cat >$EXEC_FAKEBIN/pkexec-root && chmod 755 $EXEC_FAKEBIN/pkexec-root"
    printf '%s ALL=(root) NOPASSWD: %s/pkexec-root\n' "$EXEC_USER" "$EXEC_FAKEBIN" |
        rig_sb sh -c "umask 337 && cat >>$EXEC_SUDOERS"
}

t_cli_exec_pkexec() {
    local out uid ino
    trap 'exec_cleanup; rig_sb rm -rf "$EXEC_FAKEBIN"' EXIT
    exec_setup
    exec_fake_pkexec
    rig_profile_keyfile work 1 ca netns-isolate=yes netns-name=work
    expect_cmd_ok "nmcli connection up work failed" rig_up_nmcli work
    uid=$(rig_sb id -u "$EXEC_USER") ino=$(rig_sb stat -L -c %i /run/netns/work)
    out=$(rig_sb runuser -u "$EXEC_USER" -- env -C /tmp "PATH=$EXEC_FAKEBIN:/usr/bin:/bin" WAYLAND_DISPLAY=w-2 \
        LD_PRELOAD=x SESSION_SECRET=s nm-vpn-netns exec work -- \
        sh -c 'echo "uid $(id -u)"; env; echo "cwd $(pwd)"; echo "ns $(readlink /proc/self/ns/net)"' 2>&1)
    expect_match "the command did not run as $EXEC_USER" "^uid $uid\$" "$out"
    expect_match "the command is not in namespace work (net:[$ino])" "^ns net:\[$ino\]\$" "$out"
    expect_match "WAYLAND_DISPLAY did not pass through pkexec" '^WAYLAND_DISPLAY=w-2$' "$out"
    expect_match "PATH did not pass through pkexec" "^PATH=$EXEC_FAKEBIN:/usr/bin:/bin\$" "$out"
    expect_no_match "a variable off the allow-list passed" '^(LD_PRELOAD|SESSION_SECRET|PKEXEC_UID)=' "$out"
    expect_match "the command did not start in the caller's directory" '^cwd /tmp$' "$out"
    pass_note "through pkexec: uid $uid in work, the session's variables and directory; nothing else"
    expect_cmd_fails "the privileged part took --session-env without pkexec" \
        rig_sb runuser -u "$EXEC_USER" -- sudo nm-vpn-netns exec --session-env LANG=C work -- true
    expect_contains "the refusal of --session-env does not say why" \
        "only for the command's own call through pkexec" "$EXPECT_OUT"
    pass_note "--session-env is refused outside pkexec"
}

E2E_TESTS+=(t_cli_exec_sudo t_cli_exec_refused t_cli_exec_resolved_link t_cli_exec_pkexec)
