#!/usr/bin/env bash
# The purge of the agent's records (`nm_vpn_netns_purge_record` in packaging/takeover.sh: the .deb's
# purge and the RPM's erase), on records of its own: a file the agent wrote is put back or removed,
# one changed since is left, and one
# removed since is named as removed (not as changed). Run as root: the script runs itself again in
# a mount namespace of its own, with an overlay on /etc, so /etc/netns here is a scratch one and
# the system's is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z ${DEB_POSTRM_SCRATCH:-} ]]; then
    DEB_POSTRM_SCRATCH=$(mktemp -d)
    trap 'rm -rf "$DEB_POSTRM_SCRATCH"' EXIT
    export DEB_POSTRM_SCRATCH
    unshare --mount --propagation private "$0"
    exit
fi
mkdir "$DEB_POSTRM_SCRATCH"/{upper,work,records}
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$DEB_POSTRM_SCRATCH/upper,workdir=$DEB_POSTRM_SCRATCH/work" /etc

# shellcheck source=tests/e2e/lib/expect.sh
. tests/e2e/lib/expect.sh
. packaging/takeover.sh

hex() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }
ADMIN="nameserver 192.0.2.53
" OURS="nameserver 10.8.0.1
"

# NAME BACKUP|null [CONTENT]: a record of namespace NAME whose resolv.conf the agent wrote as $OURS
# over BACKUP (null: it created the file); the file now holds CONTENT, or is gone without it.
# Prints what nm_vpn_netns_purge_record says about it.
purge() {
    local record=$DEB_POSTRM_SCRATCH/records/$1 backup=null
    [[ $2 == null ]] || backup="\"$(hex "$2")\""
    mkdir -p "/etc/netns/$1"
    [[ $# -lt 3 ]] || printf '%s' "$3" >"/etc/netns/$1/resolv.conf"
    printf '{"netns": "%s", "files": [{"file": "resolv.conf", "backup_hex": %s, "written_hex": "%s"}], "etc_dir_created": false}\n' \
        "$1" "$backup" "$(hex "$OURS")" >"$record"
    nm_vpn_netns_purge_record "$record" files 2>&1
}

out=$(purge created-gone null)
expect_eq "a file the agent created, removed since: purge says" "" "$out"
out=$(purge replaced-gone "$ADMIN")
expect_eq "a file the agent replaced, removed since: purge says" \
    "left /etc/netns/replaced-gone/resolv.conf: it was removed since nm-vpn-netns wrote it" "$out"
expect_cmd_fails "purge put back a file someone removed" test -e /etc/netns/replaced-gone/resolv.conf
pass_note "a file removed since the agent wrote it is named as removed, and stays removed"

out=$(purge changed "$ADMIN" "nameserver 198.51.100.1")
expect_eq "a file changed since: purge says" \
    "left /etc/netns/changed/resolv.conf: it changed since nm-vpn-netns wrote it" "$out"
expect_eq "a file changed since: purge changed it" "nameserver 198.51.100.1" "$(cat /etc/netns/changed/resolv.conf)"
out=$(purge replaced "$ADMIN" "$OURS")
expect_eq "a file the agent replaced: purge says" "restored /etc/netns/replaced/resolv.conf" "$out"
expect_eq "a file the agent replaced: its content after purge" "$ADMIN" "$(cat /etc/netns/replaced/resolv.conf)
"
out=$(purge created null "$OURS")
expect_eq "a file the agent created: purge says" "removed /etc/netns/created/resolv.conf" "$out"
pass_note "a file changed since is left; one as the agent wrote it is restored or removed"
