# shellcheck shell=bash
# Assertions for the scenarios. A scenario runs in a subshell with `set -e`; a failed check prints
# "  FAILED: WHAT", what it expected and what it got, and ends the scenario.
#
# The output under test is always captured into a variable first and matched there, never piped
# into `grep -q`: the rig runs with `set -o pipefail`, and grep -q exits at its first match, so the
# command writing into the pipe may die of SIGPIPE and fail the pipeline although the line was there.
#
# WHAT is the message that names the failure ("no default route via the tun in agent-test").
# Patterns are extended regular expressions (grep -E), matched line by line.

pass_note() { printf '  ok: %s\n' "$*"; }

fail() {
    printf '  FAILED: %s\n' "$*"
    exit 1
}

# Prints $1 indented, or "(nothing)" when it is empty.
expect_show() {
    if [[ -z $1 ]]; then
        printf '      (nothing)\n'
    else
        printf '%s\n' "$1" | sed 's/^/      /'
    fi
}

# Fails with WHAT, the expectation $2 and the actual output $3.
expect_failed() {
    printf '  FAILED: %s\n' "$1"
    printf '    expected: %s\n' "$2"
    printf '    got:\n'
    expect_show "$3"
    exit 1
}

# WHAT EXPECTED ACTUAL: the two strings are equal.
expect_eq() {
    [[ $3 == "$2" ]] || expect_failed "$1" "'$2'" "$3"
}

# WHAT UNEXPECTED ACTUAL: the two strings differ.
expect_ne() {
    [[ $3 != "$2" ]] || expect_failed "$1" "anything but '$2'" "$3"
}

# WHAT REGEX ACTUAL: a line of ACTUAL matches REGEX.
expect_match() {
    grep -qE -- "$2" <<<"$3" || expect_failed "$1" "a line matching /$2/" "$3"
}

# WHAT REGEX ACTUAL: no line of ACTUAL matches REGEX.
expect_no_match() {
    local hits
    hits=$(grep -E -- "$2" <<<"$3") || return 0
    expect_failed "$1" "no line matching /$2/ (these match: ${hits//$'\n'/ | })" "$3"
}

# WHAT LINE ACTUAL: ACTUAL has a line equal to LINE.
expect_line() {
    grep -qxF -- "$2" <<<"$3" || expect_failed "$1" "the line '$2'" "$3"
}

# WHAT TEXT ACTUAL: ACTUAL contains TEXT.
expect_contains() {
    grep -qF -- "$2" <<<"$3" || expect_failed "$1" "text containing '$2'" "$3"
}

# WHAT TEXT ACTUAL: ACTUAL does not contain TEXT.
expect_not_contains() {
    ! grep -qF -- "$2" <<<"$3" || expect_failed "$1" "no text containing '$2'" "$3"
}

# WHAT COMMAND...: the command succeeds. Its output (stdout and stderr) goes to $EXPECT_OUT.
expect_cmd_ok() {
    local what=$1 rc=0
    shift
    EXPECT_OUT=$("$@" 2>&1) || rc=$?
    ((rc == 0)) || expect_failed "$what" "\`$*\` to succeed (it exited $rc)" "$EXPECT_OUT"
}

# WHAT COMMAND...: the command fails. Its output (stdout and stderr) goes to $EXPECT_OUT.
expect_cmd_fails() {
    local what=$1
    shift
    EXPECT_OUT=$("$@" 2>&1) || return 0
    expect_failed "$what" "\`$*\` to fail (it succeeded)" "$EXPECT_OUT"
}

# WHAT SECS COMMAND...: the command succeeds within SECS seconds (polled every 0.1 s). If it never
# does, the output of one last try is what was got.
expect_within() {
    local what=$1 secs=$2 out rc=0
    shift 2
    rig_wait "$secs" "$@" && return 0
    out=$("$@" 2>&1) || rc=$?
    ((rc == 0)) || expect_failed "$what" "\`$*\` to succeed within $secs s (it exited $rc)" "$out"
}

# Prints how text $2 differs from text $1 (`diff`: < first, > second); fails when they differ.
text_diff() { diff <(printf '%s\n' "$1") <(printf '%s\n' "$2"); }

# WHAT EXPECTED ACTUAL: the two texts are equal; else fails with their difference.
expect_same() {
    [[ $3 == "$2" ]] || expect_failed "$1" "the same text (diff: < expected, > got)" "$(text_diff "$2" "$3")"
}

# REGEX COMMAND...: succeeds when a line of the command's output matches REGEX (a probe for rig_wait).
output_matches() {
    local re=$1 out
    shift
    out=$("$@" 2>/dev/null) || true
    grep -qE -- "$re" <<<"$out"
}

# WHAT SECS REGEX COMMAND...: within SECS seconds, a line of the command's output matches REGEX.
expect_match_within() {
    local what=$1 secs=$2 re=$3
    shift 3
    rig_wait "$secs" output_matches "$re" "$@" && return 0
    expect_failed "$what" "within $secs s, a line of \`$*\` matching /$re/" "$("$@" 2>&1)"
}
