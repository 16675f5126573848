# shellcheck shell=bash
# Benchmarks on the rig (b_NAME), run by `make bench` through run.sh. They print figures for
# BENCHMARKS.md and assert nothing about speed: the machines are noisy.

# Prints "label: median X ms (min Y, max Z, n N)" for the millisecond values on stdin.
bench_stats() {
    sort -n | awk -v label="$1" '{v[NR] = $1} END {
        if (NR == 0) { print label ": no samples"; exit 1 }
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "  %s: median %.1f ms (min %.1f, max %.1f, n %d)\n", label, m, v[1], v[NR], NR }'
}

# Memory status lines of the sandbox's processes named $1.
proc_status() {
    local pid
    for pid in $(sb_pids "$1"); do
        rig_sb grep -E '^(VmRSS|VmHWM)' "/proc/$pid/status" || true
    done
}

# The agent's Isolate over the system bus with a held tun: the agent's own measure of the
# isolation step, and the round trip seen by the caller; then the agent's memory.
b_agent_isolate() {
    local out agent=() trip=()
    for _ in $(seq 20); do
        agent_client --tun benchtun0 --id bench --uuid "$(new_uuid)" \
            --settings netns-isolate=yes,netns-name=bench --addr4 198.19.0.2/24 --dns4 "$RIG_TUN_SERVER_IP"
        out=$(agent_say "")
        expect_json "Isolate failed" netns bench "$out"
        agent+=("$(awk -v us="$(json_field "$out" elapsed-us)" 'BEGIN {print us / 1000}')")
        trip+=("$(awk -v us="$(json_field "$out" call-us)" 'BEGIN {print us / 1000}')")
        agent_say "release bench" >/dev/null
        agent_end
    done
    printf '%s\n' "${agent[@]}" | bench_stats "isolation step, measured by the agent"
    printf '%s\n' "${trip[@]}" | bench_stats "Isolate round trip over the system bus, seen by the caller"
    proc_status nm-vpn-netns-ag | sed 's/^/  agent /'
}
