# shellcheck shell=bash
# The local-user scenario of the booted-system test, sourced by guest-test.sh. A local user, bob,
# with a real logind session, brings up VPN profiles that carry connection.permissions=user:bob.
# Each profile aims at something bob must not get: a namespace the agent did not create, an
# /etc/netns entry it did not create, a path-like name. Each is refused and leaves nothing behind.
# A plain profile of bob's comes up, under the name the agent's policy gives user profiles.
#
# NetworkManager hides a profile with connection.permissions=user:NAME unless NAME has a logind
# session, and refuses to activate one for a uid without a session. `runuser -l` runs the PAM stack
# runuser-l, whose pam_systemd registers a session with logind, as a login does. That session has
# no seat (the guest is headless), so polkit counts bob as neither local nor active, and
# NetworkManager's network-control would need an admin's password. A rule grants bob what
# NetworkManager's own policy grants the active user at a seat (allow_active=yes), and no more.

# What the agent does with a user profile's name (/etc/nm-vpn-netns/agent.conf, default policy):
# the namespace of user USER's profile with netns-name NAME, u<UID>-NAME. Change it here if the
# policy changes.
user_netns() { echo "u$(id -u "$1")-$2"; }

UL_USER=bob
UL_POLKIT_RULE=/etc/polkit-1/rules.d/50-nm-vpn-netns-vm-test.rules

# Runs nmcli as bob: his uid is what NetworkManager authorizes and matches against permissions.
bob_nmcli() { runuser -u "$UL_USER" -- nmcli "$@"; }

# A case's fixtures go only after its VPN, if one came up, is down: the agent's release needs them.
bob_down() { nmcli -w 30 connection down "$1" >/dev/null 2>&1 || true; }

bob_sessions() { loginctl show-user "$UL_USER" -p Sessions --value 2>/dev/null; }
bob_has_session() { [[ -n $(bob_sessions) ]]; }
profile_visible() { [[ $'\n'$(nmcli -g NAME connection show)$'\n' == *$'\n'"$1"$'\n'* ]]; }

# A profile of bob's: an isolated VPN with netns-name NETNS_NAME.
bob_profile() {
    rig_profile_keyfile "$1" 1 ca netns-isolate=yes "netns-name=$2" "connection.permissions=user:$UL_USER;"
    rig_wait 10 profile_visible "$1" ||
        expect_failed "NetworkManager does not show bob's profile $1 although bob has a session" \
            "$1 in \`nmcli connection show\`" "$(nmcli -g NAME connection show)"
}

# What a refused activation must leave as it found: the namespaces and their links, /etc/netns
# with every file's hash, and the agent's records.
leftovers() {
    local path
    echo "--- /run/netns"
    for path in /run/netns/*; do
        [[ -e $path ]] || continue
        printf '%s: %s\n' "${path##*/}" "$(ip -n "${path##*/}" -o link show 2>&1 | awk -F': ' '{print $2}' | tr '\n' ' ')"
    done
    echo "--- /etc/netns"
    [[ ! -d /etc/netns ]] || (cd /etc/netns && find . -printf '%p %y %m\n' | sort && find . -type f -exec sha256sum {} + | sort)
    echo "--- records"
    ls -A /run/nm-vpn-netns 2>/dev/null || true
}

# Bob brings up PROFILE, which must be refused with a message that matches REGEX in NetworkManager's
# journal, and leave everything as it was.
expect_refused() {
    local name=$1 re=$2 before_net before_left since rc=0 out said
    before_net=$(rig_snapshot)
    before_left=$(leftovers)
    since=$(date +%s)
    out=$(bob_nmcli -w 60 connection up "$name" 2>&1) || rc=$?
    printf '    as bob, nmcli connection up %s (rc %s): %s\n' "$name" "$rc" "$out"
    ((rc != 0)) || expect_failed "bob's profile $name was activated" "nmcli connection up to fail" "$out"
    expect_ne "NetworkManager reports bob's profile $name activated" activated "$(rig_state "$name")"
    # Ours, or NetworkManager's with our refusal in it (a refusal at NeedSecrets is logged by NM).
    said=$(journalctl -q -b --since "@$since" --no-pager | grep -F 'nm-vpn-netns') || true
    said=$(grep -E "$re" <<<"$said" | grep -E 'fail|refus') ||
        expect_failed "no journal line says why $name was refused" "a refusal naming /$re/" \
            "$(journalctl -q -b --since "@$since" --no-pager | grep -E 'nm-vpn-netns|NetworkManager\[')"
    record "note local user, $name refused: $(head -1 <<<"$said" | cut -d' ' -f5- | cut -c1-300)"
    expect_snapshot "the refused $name changed the root namespace" "$before_net" 15
    expect_same "the refused $name left something behind" "$before_left" "$(leftovers)"
    pass_note "bob's $name was refused, and namespaces, /etc/netns, records and the root namespace are as before"
}

# ---- the steps ------------------------------------------------------------------------------------

# bob, with a logind session of his own, and the polkit rule.
ul_session() {
    id "$UL_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$UL_USER"
    mkdir -p "${UL_POLKIT_RULE%/*}"
    cat >"$UL_POLKIT_RULE" <<EOF
// nm-vpn-netns booted-system test: $UL_USER's session has no seat, so polkit does not count it as
// active; grant what NetworkManager's policy grants an active local user.
polkit.addRule(function(action, subject) {
    if (action.id == "org.freedesktop.NetworkManager.network-control" && subject.user == "$UL_USER") {
        return polkit.Result.YES;
    }
});
EOF
    systemctl try-restart polkit.service
    XDG_SESSION_CLASS=user runuser -l "$UL_USER" -c 'exec sleep 3600' </dev/null >/dev/null 2>&1 &
    echo "$!" >"$RIG_W/bob-session.pid"
    expect_within "bob has no logind session" 20 bob_has_session
    local id
    id=$(bob_sessions)
    id=${id%% *}
    pass_note "bob's session $id: $(loginctl show-session "$id" -p Class -p Type -p State -p Remote -p Seat | tr '\n' ' ')"
    record "note local user: bob's logind session $(loginctl show-session "$id" -p Class -p Type -p State -p Seat | tr '\n' ' ')"
}

# (a) Namespaces an admin made, under the name bob's profile gives and under the name the policy
# makes of it: neither may be used.
ul_foreign_netns() {
    local ns mapped
    mapped=$(user_netns "$UL_USER" admin-ns)
    for ns in admin-ns "$mapped"; do ip netns add "$ns"; done
    trap 'bob_down bob-foreign-ns; for ns in admin-ns '"$mapped"'; do ip netns del "$ns" 2>/dev/null; done' EXIT
    bob_profile bob-foreign-ns admin-ns
    expect_refused bob-foreign-ns "admin-ns|$mapped"
    rig_profile_delete bob-foreign-ns
}

# (b) An admin's /etc/netns entry, under both names, with no namespace: the files stay byte for byte.
ul_foreign_etc() {
    local n mapped
    mapped=$(user_netns "$UL_USER" admin-dns)
    for n in admin-dns "$mapped"; do
        mkdir -p "/etc/netns/$n"
        printf 'nameserver 192.0.2.53\n# the admin'"'"'s own, for %s\n' "$n" >"/etc/netns/$n/resolv.conf"
    done
    trap 'bob_down bob-foreign-etc; rm -rf /etc/netns/admin-dns /etc/netns/'"$mapped" EXIT
    bob_profile bob-foreign-etc admin-dns
    expect_refused bob-foreign-etc "admin-dns|$mapped"
    rig_profile_delete bob-foreign-etc
}

# (c) A path-like name.
ul_path_name() {
    bob_profile bob-path ../../etc/evil
    expect_refused bob-path 'netns-name'
    expect_sb_absent "the path-like name made a file" /etc/evil
    rig_profile_delete bob-path
}

# (d) A plain profile of bob's comes up under the policy's name, beside an admin's namespace of the
# name it gives, which it leaves alone.
ul_prefixed() {
    local ns before admin
    ns=$(user_netns "$UL_USER" office)
    ip netns add office
    trap 'bob_down bob-office; ip netns del office 2>/dev/null' EXIT
    admin=$(ip -n office -o link show)
    before=$(rig_snapshot)
    bob_profile bob-office office
    expect_cmd_ok "as bob, nmcli connection up bob-office failed" bob_nmcli -w 60 connection up bob-office
    assert_isolated bob-office "$ns"
    expect_same "bob's VPN changed the admin's namespace office" "$admin" "$(ip -n office -o link show)"
    pass_note "bob's VPN runs in $ns; the admin's namespace office is untouched"
    expect_cmd_ok "as bob, nmcli connection down bob-office failed" bob_nmcli -w 30 connection down bob-office
    assert_gone "$ns" "$before"
    rig_profile_delete bob-office
}

# bob's session ends and his profiles go, whatever the steps left.
ul_end() {
    local name
    for name in bob-foreign-ns bob-foreign-etc bob-path bob-office; do rig_profile_delete "$name"; done
    for name in admin-ns office "$(user_netns "$UL_USER" admin-ns)"; do ip netns del "$name" 2>/dev/null; done
    rm -rf /etc/netns/admin-dns "/etc/netns/$(user_netns "$UL_USER" admin-dns)"
    loginctl terminate-user "$UL_USER" 2>/dev/null || true
    [[ ! -s $RIG_W/bob-session.pid ]] || kill "$(cat "$RIG_W/bob-session.pid")" 2>/dev/null || true
    rm -f "$UL_POLKIT_RULE" "$RIG_W/bob-session.pid"
}
