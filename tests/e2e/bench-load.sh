# shellcheck shell=bash
# Benchmarks of the VPN under load, on the rig (b_NAME), run through run.sh like bench.sh's:
#   b_data_plane  B3: iperf3 TCP throughput through the VPN, isolated against not isolated
#   b_memory      B4: peak RSS of the shim, the agent and the stock service during a connection,
#                 and the RSS of the agent and the shim before and after up/down cycles
#   b_scale       B5: 1, 4 and 8 isolated VPNs brought up and down at once
# Every comparison is interleaved within one run, and every figure goes through bench-stats.py.
# Nothing here asserts a speed; each benchmark asserts that it leaves nothing behind.
#
# Counts come from the environment, so that one round can run as a smoke test:
#   B3_ROUNDS (10), B3_SECONDS (5)   B4_ROUNDS (5), B4_CYCLES (20)   B5_ROUNDS (5), B5_COUNTS ("1 4 8")

bench_load_stats() { python3 "$RIG_SRC/tests/e2e/bench-stats.py" "$@"; }

# CMD...: runs the command and prints how long it took, in ms; when it fails, prints its output and
# fails. $EPOCHREALTIME, not `date`: eight of these at once must not wait for forks on two cores.
timed_ms() {
    local t0=${EPOCHREALTIME/./} out us
    out=$("$@" 2>&1) || {
        printf '%s\n' "$out"
        return 1
    }
    us=$((${EPOCHREALTIME/./} - t0))
    printf '%d.%03d\n' $((us / 1000)) $((us % 1000))
}

# LABEL FILE CMD...: appends "LABEL VALUE" to FILE, VALUE being what the command prints. When the
# command fails, what it printed is its check's message: printed, and the benchmark fails.
append_sample() {
    local label=$1 file=$2 out
    shift 2
    out=$("$@") || {
        printf '%s\n' "$out"
        exit 1
    }
    echo "$label $out" >>"$file"
}

# ---- B3, the data plane -----------------------------------------------------------------------------

# PREFIX...: Mbit/s received by the iperf3 server over B3_SECONDS of TCP from the client run under
# PREFIX (rig_sb, rig_ns NS), the first second (TCP's slow start) left out.
iperf_mbits() {
    local out mbits
    expect_cmd_ok "iperf3 under \`$*\` failed" "$@" iperf3 --client "$RIG_TUN_SERVER_IP" \
        --time "${B3_SECONDS:-5}" --omit 1 --json
    out=$EXPECT_OUT
    mbits=$(python3 -c 'import json, sys
print("%.1f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e6))' <<<"$out" 2>/dev/null) ||
        expect_failed "iperf3 under \`$*\` reported no throughput" "JSON with end.sum_received.bits_per_second" "$out"
    echo "$mbits"
}

data_plane_exit() {
    # An EXIT trap: every step runs, whatever failed before it (or was already undone).
    set +eE
    [[ -z ${IPERF_PID:-} ]] || { kill "$IPERF_PID" 2>/dev/null && wait "$IPERF_PID" 2>/dev/null; }
    rig_down_nmcli dp-iso >/dev/null 2>&1
    rig_down_nmcli dp-plain >/dev/null 2>&1
    rig_profile_delete dp-iso
    rig_profile_delete dp-plain
}

# The same VPN isolated (iperf3 in its namespace) and not isolated (iperf3 in the sandbox's root
# namespace, through the shim), both up at once with their own certificates, measured in turns.
# The server is iperf3 on the OpenVPN server's tunnel address, which the underlay cannot reach.
b_data_plane() {
    local rounds=${B3_ROUNDS:-10} i samples=$RIG_W/b_data_plane.samples before
    before=$(rig_snapshot)
    trap data_plane_exit EXIT
    rig_profile_keyfile dp-plain 1 ca
    rig_profile_keyfile dp-iso 2 ca netns-isolate=yes netns-name=dp
    # `ip netns exec` execs, so $! is iperf3 itself, ended by its PID.
    ip netns exec "$RIG_INET" iperf3 --server --bind "$RIG_TUN_SERVER_IP" --logfile "$RIG_W/iperf3.log" </dev/null &
    IPERF_PID=$!
    expect_match_within "iperf3 does not listen in $RIG_INET" 10 "$RIG_TUN_SERVER_IP:5201" rig_inet ss -Hltn
    expect_cmd_ok "the isolated VPN did not come up" rig_up_nmcli dp-iso
    expect_cmd_ok "the VPN not isolated did not come up" rig_up_nmcli dp-plain
    expect_ping "no ping from namespace dp" 10 rig_ns dp
    expect_ping "no ping from the root namespace through the VPN not isolated" 10 rig_sb
    : >"$samples"
    for ((i = 1; i <= rounds; i++)); do
        append_sample isolated "$samples" iperf_mbits rig_ns dp
        append_sample plain "$samples" iperf_mbits rig_sb
    done
    expect_cmd_ok "down of the VPN not isolated failed" rig_down_nmcli dp-plain
    expect_cmd_ok "down of the isolated VPN failed" rig_down_nmcli dp-iso
    expect_within "NM still reports dp-plain active" 30 nm_inactive dp-plain
    # The tun of the VPN not isolated is in the root namespace until its openvpn exits.
    expect_vpn_gone
    assert_fault_clean dp-iso dp "$before"
    bench_load_stats --title "B3, TCP throughput through the VPN (iperf3, ${B3_SECONDS:-5} s each)" \
        --unit Mbit/s --diff isolated-plain --ratio isolated/plain <"$samples"
}

# ---- B4, memory -------------------------------------------------------------------------------------

# NAME FIELD: FIELD of /proc/PID/status (VmHWM, VmRSS), in kB, of the sandbox's one process NAME.
sb_mem_kb() {
    local pids kb
    pids=$(sb_pids "$1")
    [[ -n $pids && $pids != *$'\n'* ]] || expect_failed "no single process to measure" "one process named $1" "$(sb_ps "$1")"
    # shellcheck disable=SC2016 # awk's fields
    kb=$(rig_sb awk -v f="$2:" '$1 == f {print $2}' "/proc/$pids/status")
    [[ -n $kb ]] || expect_failed "no $2 of $1 (pid $pids)" "a line $2: in its status" "$(rig_sb cat "/proc/$pids/status" 2>&1)"
    echo "$kb"
}

# NAME FIELD: the same in MiB.
sb_mem_mib() {
    local kb
    kb=$(sb_mem_kb "$@") || {
        printf '%s\n' "$kb"
        return 1
    }
    awk -v kb="$kb" 'BEGIN {printf "%.2f\n", kb / 1024}'
}

# The label of a process by its name (comm, cut to 15 characters).
mem_label() {
    case $1 in
    nm-openvpn-serv) echo nm_openvpn_service ;;
    nm-vpn-netns-se) echo shim ;;
    nm-vpn-netns-ag) echo agent ;;
    esac
}

# PATH PROFILE NAME...: brings PROFILE up, appends the peak RSS (MiB) of each process NAME to
# $MEM_SAMPLES as "PATH.LABEL VALUE", and takes it down again. The stock path must run no shim: NM
# rereads the .name file a moment after `make uninstall` or `install`, and a VPN activated before
# that would be measured through the wrong plugin.
mem_path() {
    local path=$1 profile=$2 n
    shift 2
    expect_cmd_ok "activation of $profile ($path) failed" rig_up_nmcli "$profile"
    [[ $path != stock ]] || sb_none nm-vpn-netns-se ||
        expect_failed "the stock path ran through the shim" "no process nm-vpn-netns-se" "$(sb_ps nm-vpn-netns-se)"
    for n; do
        append_sample "$path.$(mem_label "$n")" "$MEM_SAMPLES" sb_mem_mib "$n" VmHWM
    done
    expect_cmd_ok "down of $profile ($path) failed" rig_down_nmcli "$profile"
    expect_vpn_gone
    expect_snapshot "the sandbox differs after $profile ($path) went down" "$MEM_BEFORE" 10
}

memory_exit() {
    # An EXIT trap: every step runs, whatever failed before it (or was already undone).
    set +eE
    [[ -z ${MEM_STOCK:-} ]] || rig_install
    rig_down_nmcli mem-plain >/dev/null 2>&1
    rig_down_nmcli mem-iso >/dev/null 2>&1
    rig_profile_delete mem-plain
    rig_profile_delete mem-iso
}

# NAME...: "LABEL VALUE" of the VmRSS (kB) of the agent and of the shim while mem-iso is up, the
# labels being agent_NAME and shim_NAME; then mem-iso goes down.
soak_rss() {
    expect_cmd_ok "activation of mem-iso failed" rig_up_nmcli mem-iso
    append_sample "agent_$1" "$MEM_SOAK" sb_mem_kb nm-vpn-netns-ag VmRSS
    append_sample "shim_$1" "$MEM_SOAK" sb_mem_kb nm-vpn-netns-se VmRSS
    expect_cmd_ok "down of mem-iso failed" rig_down_nmcli mem-iso
    expect_vpn_gone
}

# The same profile through the stock plugin alone (ours uninstalled, as b_activation does it),
# through the shim without isolation, and isolated, in turns; then B4_CYCLES up/down cycles of the
# isolated VPN (t_fault_cycles' own) between two measures of the agent's and the shim's RSS. The
# agent is long-lived: its peak is that of its life so far, which an install ends (it exits after
# the release that follows the replacement of its binary). The shim is a new process for each
# connection.
b_memory() {
    local rounds=${B4_ROUNDS:-5} cycles=${B4_CYCLES:-20} r agent
    MEM_SAMPLES=$RIG_W/b_memory.samples MEM_SOAK=$RIG_W/b_memory.soak MEM_STOCK=
    MEM_BEFORE=$(rig_snapshot)
    trap memory_exit EXIT
    rig_profile_keyfile mem-plain 3 ca
    rig_profile_keyfile mem-iso 3 ca netns-isolate=yes netns-name=mem
    : >"$MEM_SAMPLES"
    for ((r = 1; r <= rounds; r++)); do
        rig_sb make -s -C "$RIG_SRC_IN" uninstall >/dev/null
        MEM_STOCK=1
        mem_path stock mem-plain nm-openvpn-serv
        rig_install
        MEM_STOCK=
        mem_path shim mem-plain nm-vpn-netns-se nm-openvpn-serv
        mem_path isolated mem-iso nm-vpn-netns-se nm-openvpn-serv nm-vpn-netns-ag
    done
    bench_load_stats --title "B4, peak RSS (VmHWM) during a connection" --unit MiB \
        --key stock.nm_openvpn_service --key isolated.shim --key isolated.agent \
        --diff isolated.nm_openvpn_service-stock.nm_openvpn_service <"$MEM_SAMPLES"

    : >"$MEM_SOAK"
    soak_rss before
    agent=$(agent_pid)
    fault_cycles mem-iso mem 1 "$cycles"
    expect_vpn_gone
    soak_rss after
    expect_eq "the agent was restarted during the cycles" "$agent" "$(agent_pid)"
    assert_fault_clean mem-iso mem "$MEM_BEFORE"
    bench_load_stats --title "B4, RSS (VmRSS) with the isolated VPN up, before and after $cycles up/down cycles" \
        --unit kB --diff agent_after-agent_before --diff shim_after-shim_before <"$MEM_SOAK"
}

# ---- B5, scale --------------------------------------------------------------------------------------

# NAME: `nmcli connection down` of VPN NAME (scaleI isolated, in namespace scaleI; plainI not; both
# with client I's certificate), then a wait, within 30 s, until its openvpn has exited and, isolated,
# its namespace, /etc/netns entry and record are gone: the teardown goes on after nmcli returns (the
# stock plugin stops openvpn, which exits 1-2 s later, and then the agent releases).
scale_down() {
    # shellcheck disable=SC2016 # expanded by the sandbox's shell
    rig_sb sh -c 'nmcli -w 30 connection down "$1" >/dev/null || exit 1
        i=0
        while [ -e "/run/netns/$1" ] || [ -e "/etc/netns/$1" ] || [ -e "/run/nm-vpn-netns/$1" ] ||
            pgrep -f "$2" >/dev/null; do
            i=$((i + 1))
            [ "$i" -le 1500 ] || { echo "$1: not released within 30 s"; exit 1; }
            sleep 0.02
        done' sh "$1" "pki/client${1//[a-z]/}[.]crt"
}

# KIND WHAT K: starts WHAT (up or down) of KIND1..KINDK (scale: isolated, plain: not) at once, waits
# for all, and appends each connection's time to $SCALE_SAMPLES as "LABEL VALUE" and their median to
# $SCALE_ROUNDS, LABEL being WHATK for the isolated ones and plain_WHATK for the others.
scale_step() {
    local kind=$1 what=$2 k=$3 i pids=() failed=() d=$RIG_W/b_scale label
    label=$what$k
    [[ $kind == scale ]] || label=${kind}_$label
    mkdir -p "$d"
    for ((i = 1; i <= k; i++)); do
        if [[ $what == up ]]; then
            timed_ms rig_up_nmcli "$kind$i" >"$d/$i" &
        else
            timed_ms scale_down "$kind$i" >"$d/$i" &
        fi
        pids+=($!)
    done
    # Every job is waited for before any failure is reported, so that none outlives the benchmark.
    for ((i = 1; i <= k; i++)); do
        wait "${pids[i - 1]}" || failed+=("$kind$i: $(cat "$d/$i")")
    done
    ((${#failed[@]} == 0)) || expect_failed "$what failed, $k at once" "every $what to succeed" "$(printf '%s\n' "${failed[@]}")"
    for ((i = 1; i <= k; i++)); do
        echo "$label $(cat "$d/$i")" >>"$SCALE_SAMPLES"
    done
    echo "$label $(cat "$d"/[0-9]* | bench_load_stats --median)" >>"$SCALE_ROUNDS"
    rm -f "$d"/[0-9]*
}

scale_exit() {
    # An EXIT trap: every step runs, whatever failed before it (or was already undone).
    set +eE
    local i
    for ((i = 1; i <= ${SCALE_MAX:-0}; i++)); do
        rig_down_nmcli "scale$i" >/dev/null 2>&1
        rig_down_nmcli "plain$i" >/dev/null 2>&1
        rig_profile_delete "scale$i"
        rig_profile_delete "plain$i"
    done
}

# B5_COUNTS isolated VPNs (default 1, 4 and 8), each with its own certificate and namespace, brought
# up at once (nmcli in parallel) and each shown to work, then down at once, and nothing of any of them
# left; then as many of the same VPNs not isolated (through the shim), the control that tells what
# the isolation adds to the cost of concurrency from what openvpn, NM and two cores cost anyway. The
# counts and both kinds in turns, B5_ROUNDS times. Per connection: up is nmcli's until activated,
# down is from nmcli down until its openvpn has exited and, isolated, its namespace, /etc/netns entry
# and record are gone.
b_scale() {
    local rounds=${B5_ROUNDS:-5} counts k r i before first out ratios=()
    read -r -a counts <<<"${B5_COUNTS:-1 4 8}"
    SCALE_MAX=0
    for k in "${counts[@]}"; do ((k <= SCALE_MAX)) || SCALE_MAX=$k; done
    ((SCALE_MAX <= RIG_CLIENTS)) ||
        expect_failed "B5_COUNTS asks for more VPNs than the rig has certificates" "at most $RIG_CLIENTS" "$SCALE_MAX"
    SCALE_SAMPLES=$RIG_W/b_scale.samples SCALE_ROUNDS=$RIG_W/b_scale.rounds
    before=$(rig_snapshot)
    trap scale_exit EXIT
    for ((i = 1; i <= SCALE_MAX; i++)); do
        rig_profile_keyfile "scale$i" "$i" ca netns-isolate=yes "netns-name=scale$i"
        rig_profile_keyfile "plain$i" "$i" ca
    done
    # The agent's D-Bus activation belongs to no count: it runs before the first.
    agent_start
    : >"$SCALE_SAMPLES"
    : >"$SCALE_ROUNDS"
    for ((r = 1; r <= rounds; r++)); do
        for k in "${counts[@]}"; do
            scale_step scale up "$k"
            for ((i = 1; i <= k; i++)); do
                expect_activated "scale$i is not activated, $k at once" "scale$i"
                expect_ping "no ping from namespace scale$i, $k at once" 10 rig_ns "scale$i"
            done
            scale_step scale down "$k"
            # Its notes only when it fails: 13 connections a round would bury the figures.
            for ((i = 1; i <= k; i++)); do
                out=$(assert_fault_clean "scale$i" "scale$i" "$before") || {
                    printf '%s\n' "$out"
                    exit 1
                }
            done
            scale_step plain up "$k"
            for ((i = 1; i <= k; i++)); do
                expect_activated "plain$i is not activated, $k at once" "plain$i"
            done
            scale_step plain down "$k"
            expect_vpn_gone "a process of the VPNs not isolated still runs after down, $k at once"
        done
        pass_note "round $r: ${counts[*]} isolated VPNs at once came up, worked and left nothing; so did as many not isolated"
    done
    bench_load_stats --title "B5, each connection's up and down, N isolated VPNs at once" <"$SCALE_SAMPLES"
    first=${counts[0]}
    for k in "${counts[@]:1}"; do
        ratios+=(--ratio "up$k/up$first" --ratio "plain_up$k/plain_up$first")
        ratios+=(--ratio "down$k/down$first" --ratio "plain_down$k/plain_down$first")
    done
    bench_load_stats --title "B5, the median connection of each round, against $first at once" "${ratios[@]}" <"$SCALE_ROUNDS"
}
