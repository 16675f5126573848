# shellcheck shell=bash
# B2, activation (`make bench`, the rig's b_activation): `nmcli connection up` of one profile until
# the VPN is usable, through the stock plugin alone, through the shim without isolation, and
# isolated, interleaved round by round (stock, shim, isolated, stock, ...), so that the machine's
# noise falls on all three alike. The figures come from bench-stats.py; no time is asserted.
#
#   BENCH_ROUNDS       rounds of the three (default 30; 1 for a smoke run)
#   BENCH_COLD_ROUNDS  isolated activations after them, each right after the agent was stopped, so
#                      that each includes the agent's start by D-Bus activation (default 5)

BENCH_NAME_FILE=/usr/lib/NetworkManager/VPN/nm-openvpn-service.name

# The registration of path $1 (stock or shim): the .name file that NM must load for it.
bench_name_of() {
    case $1 in
        # What make install diverted: the stock plugin's own file (packaging/takeover.sh).
        stock) echo "$BENCH_NAME_FILE.distrib" ;;
        # Ours, as make install wrote it; b_activation keeps a copy.
        shim) echo "$RIG_IN/bench-shim.name" ;;
    esac
}

# Registers path $1 (stock or shim) as NM's openvpn plugin the way packaging/takeover.sh does:
# the old .name removed, the new one renamed into place. The VPN log domain is at debug only for
# the swap (rig_nm_reregister), so that the timed activations log as usual.
bench_register() {
    # The new file has no .name suffix until renamed, so NM never reads it half-written.
    # shellcheck disable=SC2016 # expanded by the sandbox's shell
    rig_nm_reregister "$BENCH_NAME_FILE" rig_sb sh -ec 'cp "$1" "$2.bench-new" && rm "$2" && mv "$2.bench-new" "$2"' \
        sh "$(bench_name_of "$1")" "$BENCH_NAME_FILE"
}

# The plugin that NM ran for the VPN now up is the one of path $1: the swap took.
bench_expect_path() {
    if [[ $1 == stock ]]; then
        sb_none nm-vpn-netns-se ||
            expect_failed "the shim ran in a stock round" "no nm-vpn-netns-se" "$(sb_ps nm-vpn-netns-se nm-openvpn-serv)"
    else
        expect_proc_running "the shim did not run in a $1 round" nm-vpn-netns-se
    fi
}

# Microseconds of bash's clock, without a fork.
bench_now_us() { echo "${EPOCHREALTIME/./}"; }
# Milliseconds from microsecond instant $1 to $2, to the µs.
bench_ms() { printf '%d.%03d' $((($2 - $1) / 1000)) $((($2 - $1) % 1000)); }

# One activation of profile $1 for path $2 (stock, shim, isolated or isolated-cold); the tunnel's
# server must answer a ping from the network namespace at path $3. Appends "PATH MS" to
# $samples (until the server answered), $activated (until nmcli returned) and, when the agent
# isolated, $agent_step (the isolation step, as the agent measures and logs it). Then down, and
# waits until the sandbox is as in $before.
bench_activate() {
    local name=$1 path=$2 ns=$3 t0 t1 t2 log_offset step
    log_offset=$(stat -c %s "$RIG_W/sandbox.log")
    t0=$(bench_now_us)
    expect_cmd_ok "activation of $name ($path) failed" rig_up_nmcli "$name"
    t1=$(bench_now_us)
    # The same probe for every path, `nsenter --net` included: for stock and shim into the sandbox's
    # root namespace (PID 1's), where the process already is, so that the probes cost the same.
    expect_within "no ping through $name ($path)" 10 probe_ping rig_sb nsenter --net="$ns"
    t2=$(bench_now_us)
    bench_expect_path "$path"
    echo "$path $(bench_ms "$t0" "$t2")" >>"$samples"
    echo "$path $(bench_ms "$t0" "$t1")" >>"$activated"
    if [[ $path == isolated* ]]; then
        # "isolated connection ... in N µs" (agent/executor): the executor's own measure.
        step=$(tail -c +"$((log_offset + 1))" "$RIG_W/sandbox.log" | sed -n 's/.*isolated connection .* in \([0-9]*\) µs$/\1/p')
        [[ -n $step ]] || expect_failed "the agent logged no isolation step for $name" \
            "a line 'isolated connection ... in N µs' in sandbox.log" "$(tail -c +"$((log_offset + 1))" "$RIG_W/sandbox.log")"
        echo "$path $(bench_ms 0 "$step")" >>"$agent_step"
    fi
    rig_down_nmcli "$name" >/dev/null
    expect_vpn_gone
    expect_snapshot "the sandbox is not as before after down ($path)" "$before" 10
}

# One round: stock, shim, isolated, each after its registration was swapped in.
bench_round() {
    bench_register stock
    bench_activate bench-plain stock /proc/1/ns/net
    bench_register shim
    bench_activate bench-plain shim /proc/1/ns/net
    bench_activate bench-iso isolated /run/netns/bench
}

# Stops the agent by its PID (it has no idle exit) and waits until no agent owns its bus name, so
# that the next isolation starts one by D-Bus activation.
bench_stop_agent() {
    local pid
    pid=$(agent_pid)
    [[ -n $pid ]] || return 0
    rig_sb kill "$pid"
    expect_within "the agent (pid $pid) did not exit on SIGTERM" 10 sb_pid_gone "$pid"
    expect_within "an agent still owns its name after pid $pid exited" 5 no_agent_on_bus
}

# Puts our registration back if a failure left the stock one in place.
bench_restore_registration() {
    rig_sb cmp -s "$BENCH_NAME_FILE" "$(bench_name_of shim)" || bench_register shim
}

b_activation() {
    local rounds=${BENCH_ROUNDS:-30} cold=${BENCH_COLD_ROUNDS:-5} before logging i dir
    local samples activated agent_step
    dir=$RIG_W/b_activation
    mkdir -p "$dir"
    samples=$dir/usable activated=$dir/activated agent_step=$dir/agent-step
    rig_profile_keyfile bench-plain 4 ca
    rig_profile_keyfile bench-iso 4 ca netns-isolate=yes netns-name=bench
    rig_sb cp "$BENCH_NAME_FILE" "$(bench_name_of shim)"
    trap bench_restore_registration EXIT
    logging=$(rig_sb nmcli -t general logging)
    before=$(rig_snapshot)

    # One round untimed: the caches are warm and the agent runs before the first timed round.
    bench_round
    : >"$samples" && : >"$activated" && : >"$agent_step"
    for ((i = 1; i <= rounds; i++)); do
        bench_round
        echo "  round $i/$rounds: $(tail -3 "$samples" | tr '\n' ' ')(ms)"
    done
    for ((i = 1; i <= cold; i++)); do
        bench_stop_agent
        bench_activate bench-iso isolated-cold /run/netns/bench
    done

    expect_eq "NM's logging after the swaps" "$logging" "$(rig_sb nmcli -t general logging)"
    expect_cmd_ok "our registration is not back in place" rig_sb cmp "$BENCH_NAME_FILE" "$(bench_name_of shim)"
    trap - EXIT
    rig_profile_delete bench-plain
    rig_profile_delete bench-iso

    local stats=(python3 "$RIG_SRC/tests/e2e/bench-stats.py")
    echo
    "${stats[@]}" --title "B2, activation: nmcli connection up until the server answers through the VPN" \
        --key isolated-cold --diff isolated-stock --diff shim-stock --diff isolated-shim <"$samples"
    echo
    "${stats[@]}" --title "B2, nmcli connection up alone (until it returns, NM reports activated)" \
        --diff isolated-stock --diff shim-stock --diff isolated-shim <"$activated"
    echo
    "${stats[@]}" --title "B2, the isolation step inside those activations, as the agent logs it" <"$agent_step"
}
