# shellcheck shell=bash
# `nm-vpn-netns doctor` on the rig's installation (`make install` in the sandbox): good, then broken
# twice, each time put back as it was.

# Runs doctor in the sandbox; prints its output and "exit N".
doctor_run() {
    local out rc=0
    out=$(rig_sb nm-vpn-netns doctor 2>&1) || rc=$?
    printf '%s\nexit %s\n' "$out" "$rc"
}

# WHAT FILE CHECK: with FILE moved away, doctor fails naming CHECK and a fix; FILE is put back
# (as a new file, which NetworkManager and dbus-daemon load again).
doctor_breaks_without() {
    local what=$1 file=$2 check=$3 saved="$RIG_IN/doctor.saved" out
    rig_sb mv "$file" "$saved"
    out=$(doctor_run)
    rig_sb mv "$saved" "$file"
    expect_match "doctor does not fail $what" '^exit 1$' "$out"
    expect_match "doctor does not name the fault $what" "^FAIL  $check: " "$out"
    expect_match "doctor gives no fix $what" '^      fix: make install ' "$out"
    pass_note "$what: doctor fails on '$check' and says to run make install"
}

t_cli_doctor() {
    local out
    out=$(doctor_run)
    expect_match "doctor fails on a good installation" '^exit 0$' "$out"
    expect_no_match "doctor finds a problem on a good installation" '^(FAIL|WARN) ' "$out"
    expect_match "doctor did not start and ask the agent" '^ok    agent: answered, contract version 1$' "$out"
    expect_match "doctor did not find our registration" \
        '^ok    registration: /usr/lib/NetworkManager/VPN/nm-openvpn-service.name runs /usr/lib/NetworkManager/nm-vpn-netns-service$' "$out"
    expect_match "doctor did not find our registration for openconnect" \
        '^ok    registration: /usr/lib/NetworkManager/VPN/nm-openconnect-service.name runs /usr/lib/NetworkManager/nm-vpn-netns-service$' "$out"
    pass_note "a good installation: exit 0, every check ok, both registrations taken over, the agent answered"

    doctor_breaks_without "without our .name" \
        /usr/lib/NetworkManager/VPN/nm-openvpn-service.name registration
    doctor_breaks_without "without the agent's activation file" \
        /usr/share/dbus-1/system-services/io.github.NmVpnNetns.Agent1.service "agent activation"

    out=$(doctor_run)
    expect_match "doctor fails once the files are back" '^exit 0$' "$out"
    pass_note "put back: doctor passes again"
}
E2E_TESTS+=(t_cli_doctor)
