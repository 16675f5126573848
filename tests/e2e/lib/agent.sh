# shellcheck shell=bash
# The agent, called over the sandbox's system bus as the plugin shim calls it, through
# tests/e2e/agent-client.py run as coprocess AGENT.
#
# bash unsets AGENT and AGENT_PID as soon as it reaps the coprocess, which may be any moment after
# the client exits (a test that kills it, or a client that quit on an error): so the PID and the
# client's stdin are kept in AGENT_CLIENT_PID and AGENT_CLIENT_IN, and only those are used later.

# Starts the client in NetworkManager's context; arguments go to it.
agent_client() {
    coproc AGENT { rig_nm_ctx /usr/bin/python3 "$RIG_SRC_IN/tests/e2e/agent-client.py" "$@" 2>&1; }
    agent_keep
}

# The same as uid 65534, from the sandbox's main namespace; from a copy in the work dir, because
# the source tree may be private to root (a CI checkout in a mktemp directory is).
agent_client_as_nobody() {
    install -m 644 "$RIG_SRC/tests/e2e/agent-client.py" "$RIG_W/agent-client.py"
    coproc AGENT { rig_sb setpriv --reuid 65534 --regid 65534 --clear-groups \
        /usr/bin/python3 "$RIG_IN/agent-client.py" "$@" 2>&1; }
    agent_keep
}

# Keeps the new coprocess's PID and duplicates of its pipes, which outlive bash's unsetting of AGENT.
agent_keep() {
    AGENT_CLIENT_PID=$AGENT_PID
    exec {AGENT_CLIENT_OUT}<&"${AGENT[0]}" {AGENT_CLIENT_IN}>&"${AGENT[1]}"
}

# Sends a command to the client (none: just read) and prints its one-line JSON answer.
agent_say() {
    local line
    [[ -z $1 ]] || echo "$1" >&"$AGENT_CLIENT_IN"
    read -r -t 30 line <&"$AGENT_CLIENT_OUT" || fail "the agent client did not answer${1:+ to \"$1\"}" >&2
    echo "$line"
}

# Tells the client to quit, waits for it, and closes our ends of its pipes.
agent_end() {
    # In a subshell that ignores SIGPIPE: a client that has died must not take the scenario with it.
    (trap '' PIPE && echo exit >&"$AGENT_CLIENT_IN") 2>/dev/null || true
    wait "$AGENT_CLIENT_PID" 2>/dev/null || true
    exec {AGENT_CLIENT_IN}>&- {AGENT_CLIENT_OUT}<&-
}

# Field $2 of the JSON object $1; empty when $1 is not JSON (the client failed before answering).
json_field() {
    /usr/bin/python3 -c '
import json, sys
try:
    print(json.loads(sys.argv[1]).get(sys.argv[2], ""))
except ValueError:
    pass' "$1" "$2"
}

# WHAT FIELD VALUE ANSWER: field FIELD of the client's JSON ANSWER is VALUE.
expect_json() {
    [[ $(json_field "$4" "$2") == "$3" ]] || expect_failed "$1" "an answer with \"$2\": \"$3\"" "$4"
}

# The agent's PID, asked of the sandbox's bus; nothing when no agent owns its name.
agent_pid() {
    local out
    out=$(rig_sb dbus-send --system --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus.GetConnectionUnixProcessID string:io.github.NmVpnNetns.Agent1 2>/dev/null) || return 0
    awk '$1 == "uint32" {print $2}' <<<"$out"
}

no_agent_on_bus() { [[ -z $(agent_pid) ]]; }

# WHAT: an agent owns its name on the bus; its PID goes to AGENT_PID.
expect_agent_running() {
    AGENT_PID=$(agent_pid)
    [[ -n $AGENT_PID ]] || expect_failed "$1" "an owner of io.github.NmVpnNetns.Agent1" "$(sb_ps)"
}

bus_reload() { rig_sb dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig; }
