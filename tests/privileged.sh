#!/usr/bin/env bash
# Runs the privileged integration tests (tests/privileged.rs) on the real kernel, inside a sandbox
# made for them: an empty network namespace, and a private mount namespace with a tmpfs on /run
# and on /var/lib, and an overlay on /etc whose upper layer lives on that tmpfs. Whatever the
# tests do to namespaces, /run/netns, /var/lib or /etc/netns ends with the sandbox; the machine's
# own namespaces and files are never touched.
#
# PRIVILEGED_STATE_DIR=DIR puts the agent's durable records and /etc/netns on a disk instead:
# DIR/records and DIR/etc-netns, which must exist, are bind-mounted inside the sandbox on
# /var/lib/nm-vpn-netns (in the tmpfs) and /etc/netns (in the overlay). tmpfs ignores fsync, so
# only a disk shows what the agent's synced writes cost (tests/bench-isolate.sh uses this).
#
# Usage, as root:  [PROFILE=release] [PRIVILEGED_STATE_DIR=DIR] bash tests/privileged.sh
#                  [TEST_NAME_FILTER] [libtest options]
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
    echo "privileged.sh: the privileged tests need root" >&2
    exit 1
fi

# Build outside the sandbox, so that cargo sees the real /run and /etc; the sandbox runs only the
# test binary.
profile=()
[[ ${PROFILE:-} == release ]] && profile=(--release)
# Not `tee /dev/stderr`: reopening stderr truncates it when it is a log file.
build=$(cargo test --locked "${profile[@]}" --test privileged --no-run 2>&1) || {
    echo "$build" >&2
    exit 1
}
echo "$build" >&2
bin=$(sed -n 's/.*Executable tests\/privileged.rs (\(.*\))$/\1/p' <<<"$build")
[[ -x $bin ]] || {
    echo "privileged.sh: could not find the test binary" >&2
    exit 1
}

state_dir=${PRIVILEGED_STATE_DIR:-}
if [[ -n $state_dir && ! (-d $state_dir/records && -d $state_dir/etc-netns) ]]; then
    echo "privileged.sh: PRIVILEGED_STATE_DIR: expected directories records and etc-netns in $state_dir" >&2
    exit 1
fi

# shellcheck disable=SC2016 # expanded by the inner shell
NM_VPN_NETNS_PRIVILEGED_SANDBOX=1 exec unshare --net --mount --propagation private -- bash -c '
    set -euo pipefail
    bin=$1
    state_dir=$2
    shift 2
    mount -t tmpfs -o mode=755 nm-vpn-netns-test-run /run
    mount -t tmpfs -o mode=755 nm-vpn-netns-test-var-lib /var/lib
    mkdir -p /run/.privileged-etc/upper /run/.privileged-etc/work
    mount -t overlay nm-vpn-netns-test-etc \
        -o lowerdir=/etc,upperdir=/run/.privileged-etc/upper,workdir=/run/.privileged-etc/work /etc
    if [[ -n $state_dir ]]; then
        # Made in the tmpfs and the overlay, so the machine'"'"'s own /var/lib and /etc get nothing.
        mkdir -p /var/lib/nm-vpn-netns /etc/netns
        mount --bind "$state_dir/records" /var/lib/nm-vpn-netns
        mount --bind "$state_dir/etc-netns" /etc/netns
    fi
    ip link set lo up
    # The capabilities of the agent'"'"'s unit (CAP_SYS_ADMIN CAP_NET_ADMIN CAP_KILL CAP_SYS_PTRACE), so a
    # step that needs more fails here.
    exec setpriv --bounding-set=-all,+sys_admin,+net_admin,+kill,+sys_ptrace --inh-caps=-all -- \
        "$bin" --ignored --test-threads=1 --show-output "$@"
' privileged-sandbox "$bin" "$state_dir" "$@"
