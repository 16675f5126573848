# shellcheck shell=bash
# Faults on the booted system, made only through what a user or an admin has: nmcli, ip and kill.
# The e2e rig tries each of them too (tests/e2e/tests-faults.sh); here they meet the distribution's
# NetworkManager.service and the agent under its hardened unit, as an outside check would.
# Sourced by guest-test.sh; each function is one run_step.

vm_inactive() { [[ -z $(rig_state "$1") ]]; }
vpn_ps() { { ps -o pid,ppid,pgid,stat,etimes,comm -C nm-vpn-netns-se,nm-openvpn-serv,openvpn || true; } | sed 's/^/    /'; }

# The namespace deleted from outside with the VPN up. Expected: the agent's watch sees the name go
# (inotify under the unit's system call filter) and the VPN fails; nothing is left, and the next up
# works.
f1_netns_deleted() {
    local before since said
    before=$(rig_snapshot)
    isolated_up nsdel
    since=$(date +%s)
    ip netns del nsdel
    pass_note "ip netns del nsdel with the VPN up"
    expect_within "NM still reports nsdel active after its namespace was deleted" 30 vm_inactive nsdel
    said=$(journalctl -q -u NetworkManager.service --since "@$since" --no-pager)
    expect_match "NM's log does not say that namespace nsdel was deleted" 'namespace nsdel was deleted' "$said"
    pass_note "the VPN failed: $(grep -m1 'namespace nsdel was deleted' <<<"$said" | sed 's/^.*\]: //')"
    assert_gone nsdel "$before"
    up_down_again nsdel "$before"
    rig_profile_delete nsdel
}

# `down` and `up` at once, three times, as the GNOME switch flicked off and on. Expected: every
# `up` comes up (the agent waits for the previous lease), and one namespace is left, then none.
f2_quick_reconnect() {
    local before
    before=$(rig_snapshot)
    isolated_up quick
    quick_cycles quick 3
    assert_isolated quick quick
    expect_eq "not exactly one namespace of a VPN" quick "$(ip netns list | awk '$1 != "'"$RIG_INET"'" {print $1}')"
    pass_note "3 immediate down/up cycles all came up, in one namespace"
    down_releases quick "the last down releases" "$before"
    rig_profile_delete quick
}

# The plugin (nm-vpn-netns-service) killed with the VPN up. Expected: its stock service and openvpn
# end, the agent releases the lease when the plugin leaves the bus, NM has the VPN down, nothing is
# left, and the next up works.
f3_shim_killed() {
    local before pid
    before=$(rig_snapshot)
    isolated_up shimkill
    pid=$(sb_pid nm-vpn-netns-se)
    [[ -n $pid ]] || expect_failed "no plugin process" "a process named nm-vpn-netns-se" "$(sb_ps)"
    # Who is whose child and in which process group, for a failure below.
    vpn_ps
    kill -9 "$pid"
    expect_within "the plugin (pid $pid) survived kill -9" 10 pid_gone "$pid"
    pass_note "the plugin (pid $pid) killed with SIGKILL while the VPN was up"
    expect_within "NM still reports shimkill active after its plugin was killed" 30 vm_inactive shimkill
    vpn_ps
    assert_gone shimkill "$before"
    up_down_again shimkill "$before"
    rig_profile_delete shimkill
}

# The plugin killed while its stock service is stopped (SIGSTOP): the kernel then sends the orphaned
# group SIGHUP and SIGCONT, and the stock service dies without ending openvpn, which restarts (as
# t_fault_shim_killed_stock_stopped on the rig). Expected: the agent, confined by its unit, ends
# openvpn itself before it deletes the namespace; nothing is left, and the next up works.
f4_stock_stopped() {
    local before stock pid since said
    before=$(rig_snapshot)
    isolated_up stockstop
    stock=$(sb_pid nm-openvpn-serv) pid=$(sb_pid nm-vpn-netns-se) since=$(date +%s)
    [[ -n $stock && -n $pid ]] || expect_failed "no stock service or plugin" "nm-openvpn-serv and nm-vpn-netns-se" "$(sb_ps)"
    kill -STOP "$stock"
    kill -9 "$pid"
    expect_within "the plugin (pid $pid) survived kill -9" 10 pid_gone "$pid"
    pass_note "stopped nm-openvpn-serv (pid $stock), then killed the plugin (pid $pid) with SIGKILL"
    expect_within "NM still reports stockstop active after its plugin was killed" 30 vm_inactive stockstop
    assert_gone stockstop "$before"
    said=$(journalctl -q -u nm-vpn-netns-agent.service --since "@$since" --no-pager | grep -o 'left the bus; ending .*' || true)
    expect_match "the agent does not say it ended the stock service's group" "^left the bus; ending its processes $stock \\(nm-openvpn-serv\\)" "$said"
    pass_note "the agent: $said"
    up_down_again stockstop "$before"
    rig_profile_delete stockstop
}
