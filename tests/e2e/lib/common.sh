# shellcheck shell=bash
# What every part of the rig uses: its log and a bounded wait.

rig_log() { printf '[rig] %s\n' "$*" >&2; }
rig_die() { rig_log "ERROR: $*"; exit 1; }

# Polls "$@" every 0.1 s until it succeeds or $1 seconds pass; a bounded wait for a state.
rig_wait() {
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}
